//! Sampling (DESIGN §4): the non-uniform shortcut schedule, fixed noise, and the Euler loop over
//! a velocity model, as plain functions over a model trait.

pub mod noise;
pub mod schedule;
pub mod tiles;
pub mod tokens;

use candle_core::{DType, Result, Tensor};

pub use noise::FixedNoise;
pub use schedule::{default_step_sizes, nearest_step_size, plan, ShiftConfig, Step};

/// A flow-matching velocity model `v = eps - x0` on tokens.
pub trait VelocityModel {
    /// `x` is `[B, N, C]`; `timestep` is `[B, N]` in [0, 1000] (per token: 0 for clean
    /// conditioning tokens); `step_size` is the shortcut condition `d` in (0, 1].
    fn velocity(&mut self, x: &Tensor, timestep: &Tensor, step_size: f64) -> Result<Tensor>;
}

/// Runs `steps` on `x` (`[B, N, C]`, starting at noise level `steps[0].s`). Tokens where
/// `clean` (`[B, N]`, 1 = clean) is set carry timestep 0 and are never updated; the others move
/// by exact Euler on the real step: `x <- x - d * v(x, 1000 s, d_model)`.
pub fn sample(
    model: &mut impl VelocityModel,
    x: &Tensor,
    clean: &Tensor,
    steps: &[Step],
) -> Result<Tensor> {
    let (b, n, _) = x.dims3()?;
    if clean.dims() != [b, n] {
        candle_core::bail!(
            "clean mask has shape {:?}, expected [{b}, {n}] to match the tokens",
            clean.dims()
        );
    }
    let clean = clean.to_dtype(DType::F32)?;
    let noisy = (1.0 - &clean)?;
    // [B, N] -> [B, N, 1]: the update mask over channels.
    let update = noisy.unsqueeze(2)?.to_dtype(x.dtype())?;
    let mut x = x.clone();
    for step in steps {
        let timestep = (&noisy * (1000.0 * step.s))?;
        let v = model.velocity(&x, &timestep, step.d_model)?;
        let delta = v.broadcast_mul(&update)?.affine(step.d, 0.0)?;
        x = (x - delta)?;
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The ideal model for a known clean target: v = (x - x0) / s, read back from the
    /// per-token timestep.
    struct Oracle {
        x0: Tensor,
        calls: usize,
        step_sizes: Vec<f64>,
    }

    impl VelocityModel for Oracle {
        fn velocity(&mut self, x: &Tensor, timestep: &Tensor, step_size: f64) -> Result<Tensor> {
            self.calls += 1;
            self.step_sizes.push(step_size);
            let s = (timestep / 1000.0)?.unsqueeze(2)?;
            // Clean tokens (s = 0) get a huge velocity that must be masked out.
            let s = s.clamp(1e-6, 1.0)?;
            (x - &self.x0)?.broadcast_div(&s)
        }
    }

    #[test]
    fn euler_with_the_ideal_velocity_lands_on_the_target() -> Result<()> {
        let dev = Device::Cpu;
        let x0 = Tensor::randn(0f32, 1.0, (1, 6, 4), &dev)?;
        let eps = Tensor::randn(0f32, 1.0, (1, 6, 4), &dev)?;
        // Token 0 is a clean conditioning token: it starts (and must stay) at its own value.
        let clean = Tensor::new(&[[1f32, 0., 0., 0., 0., 0.]], &dev)?;
        let cond = Tensor::full(5f32, (1, 1, 4), &dev)?;
        let x = Tensor::cat(&[&cond, &eps.narrow(1, 1, 5)?], 1)?;
        for n in schedule::VALID_STEPS {
            let steps = plan(n, 2048, &ShiftConfig::default(), &default_step_sizes()).unwrap();
            let mut model = Oracle {
                x0: x0.clone(),
                calls: 0,
                step_sizes: vec![],
            };
            let out = sample(&mut model, &x, &clean, &steps)?;
            assert_eq!(model.calls, n, "one model evaluation per step");
            assert_eq!(
                model.step_sizes,
                steps.iter().map(|s| s.d_model).collect::<Vec<_>>()
            );
            let kept: Vec<f32> = out.narrow(1, 0, 1)?.flatten_all()?.to_vec1()?;
            assert_eq!(kept, vec![5.0; 4], "clean token untouched");
            let err = (out.narrow(1, 1, 5)? - x0.narrow(1, 1, 5)?)?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            assert!(err < 1e-4, "{n} steps: max error {err}");
        }
        Ok(())
    }

    #[test]
    fn one_step_of_hand_computed_euler() -> Result<()> {
        struct Constant;
        impl VelocityModel for Constant {
            fn velocity(&mut self, x: &Tensor, _: &Tensor, _: f64) -> Result<Tensor> {
                x.ones_like()?.affine(2.0, 0.0)
            }
        }
        let dev = Device::Cpu;
        let x = Tensor::new(&[[[1f32], [3.0]]], &dev)?;
        let clean = Tensor::new(&[[0f32, 0.0]], &dev)?;
        let step = Step {
            s: 1.0,
            d: 0.25,
            d_model: 0.25,
        };
        // x - 0.25 * 2
        let out: Vec<f32> = sample(&mut Constant, &x, &clean, &[step])?
            .flatten_all()?
            .to_vec1()?;
        assert_eq!(out, vec![0.5, 2.5]);
        let bad = Tensor::new(&[[0f32]], &dev)?;
        assert!(sample(&mut Constant, &x, &bad, &[step]).is_err());
        Ok(())
    }
}
