//! The non-uniform shortcut schedule (paper §3.4, DESIGN §4): shifted flow-matching timesteps,
//! the real step sizes between them, and the nearest step size the model was trained on.

use serde::Deserialize;

/// LTX's resolution-dependent shift, or a fixed shift factor (DESIGN §3.3 `shift`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ShiftConfig {
    /// `mu` grows linearly with the token count, as LTX-Video's pipeline computes it
    /// (diffusers `pipelines/ltx/pipeline_ltx.py::calculate_shift`); the factor is `e^mu`.
    Dynamic {
        base_seq_len: f64,
        max_seq_len: f64,
        base_shift: f64,
        max_shift: f64,
    },
    /// A fixed shift factor `e^mu` (1 = no shift), as diffusers' `FlowMatchEulerDiscreteScheduler`
    /// `shift`.
    Fixed(f64),
}

impl Default for ShiftConfig {
    fn default() -> Self {
        ShiftConfig::Dynamic {
            base_seq_len: 1024.0,
            max_seq_len: 4096.0,
            base_shift: 0.95,
            max_shift: 2.05,
        }
    }
}

impl ShiftConfig {
    /// The shift factor `e^mu` for a sequence of `seq_len` tokens.
    pub fn factor(&self, seq_len: usize) -> f64 {
        match *self {
            ShiftConfig::Fixed(f) => f,
            ShiftConfig::Dynamic {
                base_seq_len,
                max_seq_len,
                base_shift,
                max_shift,
            } => {
                let m = (max_shift - base_shift) / (max_seq_len - base_seq_len);
                let mu = base_shift + m * (seq_len as f64 - base_seq_len);
                mu.exp()
            }
        }
    }
}

/// Step counts the sampler accepts (DESIGN §4).
pub const VALID_STEPS: [usize; 5] = [1, 2, 4, 8, 16];

/// The step sizes a TurboVSR checkpoint is trained on by default: the shortcut model's powers of
/// two from 1 to 1/128, plus extras between the large ones, where nearest-neighbour selection
/// errs most (paper §3.4: "a notable error for larger step sizes"). The paper's extra set is
/// not legible in our copy; these are the geometric midpoints 3/4, 3/8, 3/16, 3/32. A
/// checkpoint's `turbovsr.json` `step_sizes` overrides them.
pub fn default_step_sizes() -> Vec<f64> {
    let mut sizes: Vec<f64> = (0..8).map(|k| 1.0 / f64::from(1u32 << k)).collect();
    sizes.extend([0.75, 0.375, 0.1875, 0.09375]);
    sizes.sort_by(|a, b| b.total_cmp(a));
    sizes
}

/// Noise levels `s_0 = 1 > s_1 > ... > s_N = 0` for `n` steps with shift factor `factor`:
/// `u_i = 1 - i/N`, `s_i = f u_i / (1 + (f - 1) u_i)` (= `e^mu / (e^mu + (1/u_i - 1))`).
pub fn noise_levels(n: usize, factor: f64) -> Vec<f64> {
    (0..=n)
        .map(|i| {
            let u = 1.0 - i as f64 / n as f64;
            factor * u / (1.0 + (factor - 1.0) * u)
        })
        .collect()
}

/// The trained step size nearest to `d`; ties go to the smaller step.
pub fn nearest_step_size(d: f64, step_sizes: &[f64]) -> Option<f64> {
    step_sizes.iter().copied().min_by(|a, b| {
        let (da, db) = ((a - d).abs(), (b - d).abs());
        da.total_cmp(&db).then(a.total_cmp(b))
    })
}

/// One sampler step: evaluate the model at noise level `s` conditioned on step size
/// `d_model`, then move by the real step `d`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    pub s: f64,
    pub d: f64,
    pub d_model: f64,
}

/// An invalid sampler configuration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScheduleError {
    #[error("steps={0} is not one of {VALID_STEPS:?}")]
    Steps(usize),
    #[error("step_sizes must be a non-empty set of values in (0, 1], got {0:?}")]
    StepSizes(Vec<f64>),
    #[error("shift factor {0} must be positive and finite")]
    Shift(f64),
}

/// The steps of an `n`-step run over `seq_len` tokens.
pub fn plan(
    n: usize,
    seq_len: usize,
    shift: &ShiftConfig,
    step_sizes: &[f64],
) -> Result<Vec<Step>, ScheduleError> {
    if !VALID_STEPS.contains(&n) {
        return Err(ScheduleError::Steps(n));
    }
    if step_sizes.is_empty() || step_sizes.iter().any(|d| !(*d > 0.0 && *d <= 1.0)) {
        return Err(ScheduleError::StepSizes(step_sizes.to_vec()));
    }
    let factor = shift.factor(seq_len);
    if !(factor.is_finite() && factor > 0.0) {
        return Err(ScheduleError::Shift(factor));
    }
    let s = noise_levels(n, factor);
    Ok(s.windows(2)
        .map(|w| {
            let d = w[0] - w[1];
            Step {
                s: w[0],
                d,
                // Non-empty, checked above.
                d_model: nearest_step_size(d, step_sizes).unwrap_or(d),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn ltx_shift_matches_its_end_points() {
        let shift = ShiftConfig::default();
        assert!(close(shift.factor(1024).ln(), 0.95));
        assert!(close(shift.factor(4096).ln(), 2.05));
        // Halfway in tokens is halfway in mu.
        assert!(close(shift.factor(2560).ln(), 1.5));
        assert!(close(ShiftConfig::Fixed(3.0).factor(99), 3.0));
    }

    #[test]
    fn shift_config_reads_both_json_forms() {
        let d: ShiftConfig = serde_json::from_str(
            r#"{"base_seq_len":1024,"max_seq_len":4096,"base_shift":0.95,"max_shift":2.05}"#,
        )
        .unwrap();
        assert_eq!(d, ShiftConfig::default());
        let f: ShiftConfig = serde_json::from_str("2.5").unwrap();
        assert_eq!(f, ShiftConfig::Fixed(2.5));
    }

    #[test]
    fn schedules_worked_out_by_hand() {
        // No shift: uniform.
        let s = noise_levels(4, 1.0);
        assert_eq!(s, vec![1.0, 0.75, 0.5, 0.25, 0.0]);
        // Factor 3, 2 steps: s_1 = 3 * 0.5 / (1 + 2 * 0.5) = 0.75.
        let s = noise_levels(2, 3.0);
        assert!(close(s[1], 0.75) && s[0] == 1.0 && s[2] == 0.0);
        // One step goes from pure noise to clean in one move.
        assert_eq!(noise_levels(1, 7.0), vec![1.0, 0.0]);
    }

    #[test]
    fn nearest_step_size_selection() {
        let sizes = default_step_sizes();
        assert_eq!(nearest_step_size(0.74, &sizes), Some(0.75));
        assert_eq!(nearest_step_size(0.3, &sizes), Some(0.25));
        assert_eq!(nearest_step_size(0.001, &sizes), Some(1.0 / 128.0));
        // A tie between 1/2 and 1 goes to the smaller step.
        assert_eq!(nearest_step_size(0.75, &[1.0, 0.5]), Some(0.5));
        assert_eq!(nearest_step_size(0.5, &[]), None);
    }

    #[test]
    fn plan_moves_by_the_real_step_with_the_nearest_condition() {
        let steps = plan(2, 0, &ShiftConfig::Fixed(3.0), &[1.0, 0.5, 0.25]).unwrap();
        assert_eq!(steps.len(), 2);
        assert!(close(steps[0].s, 1.0) && close(steps[0].d, 0.25));
        assert_eq!(steps[0].d_model, 0.25);
        assert!(close(steps[1].s, 0.75) && close(steps[1].d, 0.75));
        // 0.75 is as far from 1 as from 0.5: the smaller step is taken.
        assert_eq!(steps[1].d_model, 0.5);
        // Real steps always add up to the whole path.
        for n in VALID_STEPS {
            let total: f64 = plan(n, 5000, &ShiftConfig::default(), &default_step_sizes())
                .unwrap()
                .iter()
                .map(|s| s.d)
                .sum();
            assert!(close(total, 1.0), "{n} steps: {total}");
        }
    }

    #[test]
    fn bad_configurations_are_errors() {
        let sizes = default_step_sizes();
        assert_eq!(
            plan(3, 0, &ShiftConfig::default(), &sizes),
            Err(ScheduleError::Steps(3))
        );
        assert!(matches!(
            plan(4, 0, &ShiftConfig::default(), &[0.0]),
            Err(ScheduleError::StepSizes(_))
        ));
        assert!(matches!(
            plan(4, 0, &ShiftConfig::Fixed(-1.0), &sizes),
            Err(ScheduleError::Shift(_))
        ));
    }
}
