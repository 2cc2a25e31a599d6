//! Where training clips come from: the Debian wallpaper set with Real-ESRGAN degradations
//! ([`crate::dataset`]), or a procedural source for tests.

use candle_core::{Device, Tensor};

use crate::model::turbovsr::test_model::SplitMix;

/// A clip pair: `hr` `[3, F, H, W]` and `lr` `[3, F, H / scale, W / scale]`, RGB in [0, 1] on the
/// CPU. The same `seed` gives the same clip.
pub trait ClipSource: Send + Sync {
    fn clip(&self, frames: usize, seed: u64) -> anyhow::Result<(Tensor, Tensor)>;
    /// Output / input size ratio.
    fn scale(&self) -> usize;
    /// HR crop size (height, width).
    fn size(&self) -> (usize, usize);
}

/// Procedural clips for tests: soft blobs and hard edges drifting by a fraction of a pixel per
/// frame; LR by box averaging.
pub struct SyntheticSource {
    pub height: usize,
    pub width: usize,
    pub scale: usize,
}

impl ClipSource for SyntheticSource {
    fn clip(&self, frames: usize, seed: u64) -> anyhow::Result<(Tensor, Tensor)> {
        let (h, w, s) = (self.height, self.width, self.scale);
        let mut rng = SplitMix(seed ^ 0xC11B);
        let mut unit = || (rng.next() >> 11) as f32 / (1u64 << 53) as f32;
        let blobs: Vec<[f32; 6]> = (0..6)
            .map(|_| [unit(), unit(), 0.05 + 0.2 * unit(), unit(), unit(), unit()])
            .collect();
        let (vx, vy) = (unit() - 0.5, unit() - 0.5);
        let edge = unit();
        let mut hr = vec![0f32; 3 * frames * h * w];
        for f in 0..frames {
            let (dx, dy) = (vx * f as f32 / w as f32, vy * f as f32 / h as f32);
            for y in 0..h {
                for x in 0..w {
                    let (u, v) = (x as f32 / w as f32 + dx, y as f32 / h as f32 + dy);
                    let mut rgb = [0.2f32, 0.2, 0.2];
                    for b in &blobs {
                        let d2 = (u - b[0]).powi(2) + (v - b[1]).powi(2);
                        let a = (-d2 / (b[2] * b[2])).exp();
                        for (c, val) in rgb.iter_mut().enumerate() {
                            *val += 0.5 * a * b[3 + c];
                        }
                    }
                    if u + 0.5 * v > edge + 0.25 {
                        rgb.iter_mut().for_each(|c| *c *= 0.6);
                    }
                    for (c, val) in rgb.iter().enumerate() {
                        hr[((c * frames + f) * h + y) * w + x] = val.clamp(0.0, 1.0);
                    }
                }
            }
        }
        let hr = Tensor::from_vec(hr, (3, frames, h, w), &Device::Cpu)?;
        let lr = hr
            .reshape((3, frames, h / s, s, w / s, s))?
            .mean(5)?
            .mean(3)?;
        Ok((hr, lr))
    }

    fn scale(&self) -> usize {
        self.scale
    }

    fn size(&self) -> (usize, usize) {
        (self.height, self.width)
    }
}

/// A seeded stream of standard normal values (the noise of the flow-matching objective and of
/// the condition augmentation; candle's own `randn` is not seedable on the CPU).
pub struct Normal(SplitMix);

impl Normal {
    pub fn new(seed: u64) -> Self {
        Self(SplitMix(seed))
    }

    pub fn uniform(&mut self) -> f64 {
        (self.0.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn tensor(&mut self, shape: &[usize]) -> candle_core::Result<Tensor> {
        let n: usize = shape.iter().product();
        let mut v = Vec::with_capacity(n);
        while v.len() < n {
            let (a, b) = self.0.normal_pair();
            v.push(a);
            if v.len() < n {
                v.push(b);
            }
        }
        Tensor::from_vec(v, shape, &Device::Cpu)
    }
}

/// The seed of step `step` of a run seeded with `seed`.
pub fn step_seed(seed: u64, step: usize) -> u64 {
    SplitMix(seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)).next()
}
