//! Colour correction of the model's output towards its bicubic input (DESIGN §6 `color-fix`).
//!
//! Diffusion decoders drift in colour: the overall tint and brightness of a window can move away
//! from the input while the detail is right. Two corrections, both taking the colour from the
//! bicubic-upscaled input (which has the right colour and no detail) and the rest from the model:
//!
//! - [`ColorFix::Wavelet`]: `out - lowpass(out) + lowpass(input)`. The low-pass is a cascade of
//!   à-trous ("with holes") binomial blurs whose taps are 1, 2, 4, 8, 16 pixels apart, the
//!   decomposition StableSR's and SeedVR's wavelet colour fix use; the sum of all the wavelet
//!   levels of the output is `out - lowpass(out)`, so the high frequencies (detail) come from the
//!   model and the residual low frequencies (colour, shading) from the input.
//! - [`ColorFix::Adain`]: adaptive instance normalization per frame and channel: the output's
//!   mean and standard deviation are replaced by the input's.
//!
//! Both run on candle tensors on the processor's device, frame by frame so that the temporaries
//! stay the size of one frame.

use candle_core::{DType, Result, Tensor, D};

pub use super::settings::ColorFix;

/// Blur levels of the wavelet decomposition: taps up to 2^4 = 16 pixels apart, so the low-pass
/// keeps structures of roughly 64 pixels and more (as StableSR's five levels).
pub const WAVELET_LEVELS: usize = 5;

/// Keeps a zero-variance channel (a flat frame) from dividing by zero.
const ADAIN_EPS: f64 = 1e-5;

impl ColorFix {
    /// Corrects `output` towards `reference`, both `(3, f, h, w)` float RGB in [-1, 1] on the
    /// same device; returns the corrected output, clamped to [-1, 1].
    pub fn apply(self, output: &Tensor, reference: &Tensor) -> Result<Tensor> {
        if self == ColorFix::None {
            return Ok(output.clone());
        }
        if output.dims() != reference.dims() || output.rank() != 4 {
            candle_core::bail!(
                "colour fix: output {:?} and reference {:?} must be the same (3, f, h, w) shape",
                output.dims(),
                reference.dims()
            );
        }
        let frames = output.dim(1)?;
        let mut fixed = Vec::with_capacity(frames);
        for i in 0..frames {
            let out = output.narrow(1, i, 1)?.to_dtype(DType::F32)?;
            let reference = reference.narrow(1, i, 1)?.to_dtype(DType::F32)?;
            fixed.push(match self {
                ColorFix::None => unreachable!("returned above"),
                ColorFix::Wavelet => wavelet_fix(&out, &reference)?,
                ColorFix::Adain => adain_fix(&out, &reference)?,
            });
        }
        Tensor::cat(&fixed, 1)?
            .clamp(-1f32, 1f32)?
            .to_dtype(output.dtype())
    }
}

/// `out - lowpass(out) + lowpass(reference)`.
fn wavelet_fix(out: &Tensor, reference: &Tensor) -> Result<Tensor> {
    let low_out = wavelet_lowpass(out, WAVELET_LEVELS)?;
    let low_ref = wavelet_lowpass(reference, WAVELET_LEVELS)?;
    (out - low_out)? + low_ref
}

/// The residual low-pass after `levels` à-trous levels: level `i` blurs the previous level with
/// the binomial kernel [1, 2, 1] / 4 along height and width, taps `2^i` pixels apart, edges
/// replicated. `x` is `(..., h, w)`.
pub fn wavelet_lowpass(x: &Tensor, levels: usize) -> Result<Tensor> {
    let (h_dim, w_dim) = (x.rank() - 2, x.rank() - 1);
    let mut low = x.clone();
    for level in 0..levels {
        let step = 1usize << level;
        low = atrous_blur(&low, h_dim, step)?;
        low = atrous_blur(&low, w_dim, step)?;
    }
    Ok(low)
}

/// `0.25 x[i - step] + 0.5 x[i] + 0.25 x[i + step]` along `dim`, indices clamped to the edge
/// (replicate padding; `step` may exceed the size).
fn atrous_blur(x: &Tensor, dim: usize, step: usize) -> Result<Tensor> {
    let n = x.dim(dim)?;
    let mut edge_shape = x.dims().to_vec();
    edge_shape[dim] = step;
    let first = x.narrow(dim, 0, 1)?.broadcast_as(edge_shape.as_slice())?;
    let last = x
        .narrow(dim, n - 1, 1)?
        .broadcast_as(edge_shape.as_slice())?;
    let padded = Tensor::cat(&[&first, x, &last], dim)?;
    let before = padded.narrow(dim, 0, n)?;
    let after = padded.narrow(dim, 2 * step, n)?;
    ((before + after)? * 0.25)? + (x * 0.5)?
}

/// Per-channel mean and (population) standard deviation of `reference` given to `out`; both
/// `(3, 1, h, w)`.
fn adain_fix(out: &Tensor, reference: &Tensor) -> Result<Tensor> {
    let (mean_out, std_out) = channel_stats(out)?;
    let (mean_ref, std_ref) = channel_stats(reference)?;
    let scale = (std_ref / (std_out + ADAIN_EPS)?)?;
    out.broadcast_sub(&mean_out)?
        .broadcast_mul(&scale)?
        .broadcast_add(&mean_ref)
}

/// Mean and standard deviation over everything but the channel, shaped `(c, 1, 1, 1)`.
fn channel_stats(x: &Tensor) -> Result<(Tensor, Tensor)> {
    let c = x.dim(0)?;
    let flat = x.reshape((c, ()))?;
    let mean = flat.mean_keepdim(D::Minus1)?;
    let var = flat.broadcast_sub(&mean)?.sqr()?.mean_keepdim(D::Minus1)?;
    Ok((
        mean.reshape((c, 1, 1, 1))?,
        var.sqrt()?.reshape((c, 1, 1, 1))?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    const CHANNEL_MEANS: [f32; 3] = [0.55, 0.40, 0.65];

    /// A smooth frame sequence in [0, 1] pixel terms (returned in [-1, 1]): per-channel base
    /// level plus slow gradients, `(3, f, h, w)`.
    fn smooth_input(f: usize, h: usize, w: usize) -> Tensor {
        let mut data = Vec::with_capacity(3 * f * h * w);
        for (c, &m) in CHANNEL_MEANS.iter().enumerate() {
            for t in 0..f {
                for y in 0..h {
                    for x in 0..w {
                        let gx = (x as f32 / w as f32 - 0.5) * 0.2;
                        let gy = (y as f32 / h as f32 - 0.5) * 0.1 * (c as f32 - 1.0);
                        let gt = 0.02 * t as f32;
                        data.push((m + gx + gy + gt) * 2.0 - 1.0);
                    }
                }
            }
        }
        Tensor::from_vec(data, (3, f, h, w), &Device::Cpu).unwrap()
    }

    /// One-pixel checkerboard detail of amplitude `a`, same on every channel.
    fn checkerboard(f: usize, h: usize, w: usize, a: f32) -> Tensor {
        let data: Vec<f32> = (0..3 * f * h * w)
            .map(|i| {
                let (y, x) = ((i / w) % h, i % w);
                if (x + y) % 2 == 0 {
                    a
                } else {
                    -a
                }
            })
            .collect();
        Tensor::from_vec(data, (3, f, h, w), &Device::Cpu).unwrap()
    }

    /// The model output of a colour-drifting decoder: input plus detail, with per-channel gain
    /// and offset.
    fn drifted(input: &Tensor, detail: &Tensor) -> Tensor {
        let gain = Tensor::new(&[0.8f32, 1.1, 0.9], &Device::Cpu)
            .unwrap()
            .reshape((3, 1, 1, 1))
            .unwrap();
        let offset = Tensor::new(&[0.15f32, -0.2, 0.1], &Device::Cpu)
            .unwrap()
            .reshape((3, 1, 1, 1))
            .unwrap();
        (input + detail)
            .unwrap()
            .broadcast_mul(&gain)
            .unwrap()
            .broadcast_add(&offset)
            .unwrap()
    }

    /// Per-channel mean in [0, 1] pixel terms.
    fn means01(x: &Tensor) -> Vec<f32> {
        ((x.reshape((3, ())).unwrap().mean(1).unwrap() + 1.0).unwrap() * 0.5)
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    fn assert_means_match(fixed: &Tensor, input: &Tensor, what: &str) {
        for (c, (got, want)) in means01(fixed).iter().zip(means01(input)).enumerate() {
            let rel = (got - want).abs() / want;
            assert!(
                rel < 0.01,
                "{what}: channel {c} mean {got} vs input {want} ({rel})"
            );
        }
    }

    #[test]
    fn drift_is_visible_without_a_fix() {
        let input = smooth_input(3, 48, 64);
        let out = drifted(&input, &checkerboard(3, 48, 64, 0.1));
        let none = ColorFix::None.apply(&out, &input).unwrap();
        let worst = means01(&none)
            .iter()
            .zip(means01(&input))
            .map(|(g, w)| (g - w).abs() / w)
            .fold(0f32, f32::max);
        assert!(worst > 0.1, "the synthetic drift must be large: {worst}");
    }

    #[test]
    fn adain_restores_the_channel_means_and_deviations() {
        let input = smooth_input(3, 48, 64);
        let out = drifted(&input, &checkerboard(3, 48, 64, 0.1));
        let fixed = ColorFix::Adain.apply(&out, &input).unwrap();
        assert_eq!(fixed.dims(), input.dims());
        assert_means_match(&fixed, &input, "adain");
        for t in 0..3 {
            let (_, std_fixed) = channel_stats(&fixed.narrow(1, t, 1).unwrap()).unwrap();
            let (_, std_in) = channel_stats(&input.narrow(1, t, 1).unwrap()).unwrap();
            let (a, b): (Vec<f32>, Vec<f32>) = (
                std_fixed.flatten_all().unwrap().to_vec1().unwrap(),
                std_in.flatten_all().unwrap().to_vec1().unwrap(),
            );
            for c in 0..3 {
                assert!(
                    (a[c] - b[c]).abs() / b[c] < 0.01,
                    "frame {t} channel {c}: std {a:?} vs {b:?}"
                );
            }
        }
    }

    #[test]
    fn wavelet_restores_the_channel_means_and_keeps_the_detail() {
        let (f, h, w) = (3, 64, 96);
        let input = smooth_input(f, h, w);
        let detail = checkerboard(f, h, w, 0.1);
        let out = drifted(&input, &detail);
        let fixed = ColorFix::Wavelet.apply(&out, &input).unwrap();
        assert_eq!(fixed.dims(), input.dims());
        assert_means_match(&fixed, &input, "wavelet");
        // The output's detail (its checkerboard, scaled by the drifted gain) survives: the fixed
        // frames are the input plus that detail, away from the border where replicate padding
        // leaks a little of the checkerboard into the low-pass.
        let gain = Tensor::new(&[0.8f32, 1.1, 0.9], &Device::Cpu)
            .unwrap()
            .reshape((3, 1, 1, 1))
            .unwrap();
        let want = (&input + detail.broadcast_mul(&gain).unwrap()).unwrap();
        let m = 2;
        let interior = |x: &Tensor| {
            x.narrow(2, m, h - 2 * m)
                .unwrap()
                .narrow(3, m, w - 2 * m)
                .unwrap()
        };
        let err = (interior(&fixed) - interior(&want))
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            err < 0.02,
            "detail or colour off by {err} (detail amplitude 0.1)"
        );
        // AdaIN, by contrast, rescales the detail with the whole frame.
        let adain = ColorFix::Adain.apply(&out, &input).unwrap();
        let adain_err = (interior(&adain) - interior(&want))
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(adain_err > err, "{adain_err} vs {err}");
    }

    #[test]
    fn lowpass_keeps_flat_frames_and_removes_the_checkerboard() {
        let flat = Tensor::full(0.3f32, (3, 1, 20, 24), &Device::Cpu).unwrap();
        let low = wavelet_lowpass(&flat, WAVELET_LEVELS).unwrap();
        let diff = (low - &flat).unwrap().abs().unwrap().flatten_all().unwrap();
        assert!(diff.max(0).unwrap().to_scalar::<f32>().unwrap() < 1e-6);
        let cb = checkerboard(1, 40, 40, 1.0);
        let low = wavelet_lowpass(&cb, 1).unwrap();
        let centre = low.narrow(2, 1, 38).unwrap().narrow(3, 1, 38).unwrap();
        let max = centre.abs().unwrap().flatten_all().unwrap().max(0).unwrap();
        assert!(max.to_scalar::<f32>().unwrap() < 1e-6);
    }

    #[test]
    fn shapes_must_match_and_none_is_the_identity() {
        let a = smooth_input(2, 8, 8);
        let b = smooth_input(1, 8, 8);
        let e = ColorFix::Wavelet.apply(&a, &b).unwrap_err().to_string();
        assert!(e.contains("same (3, f, h, w) shape"), "{e}");
        let same = ColorFix::None.apply(&a, &b).unwrap();
        assert_eq!(
            same.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        assert_eq!("adain".parse::<ColorFix>().unwrap(), ColorFix::Adain);
        assert!("blue".parse::<ColorFix>().unwrap_err().contains("blue"));
    }
}
