//! Fixed sampling noise (paper §3.5, DESIGN §4): one Gaussian value per (channel, latent frame,
//! global latent row, global latent column), computed from the seed and the position alone.
//! Overlapping spatial tiles therefore see the same noise where they overlap, every window
//! starts from the same noise, and a run is bit-for-bit repeatable on any device (the field is
//! made on the host and uploaded).

use candle_core::{Device, Result, Tensor};

/// SplitMix64's finalizer: a bijective 64-bit mix with good avalanche.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A seeded Gaussian field over latent positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedNoise {
    seed: u64,
}

impl FixedNoise {
    pub fn new(seed: u64) -> Self {
        Self { seed }
    }

    /// The standard normal value at one position (Box-Muller on two 32-bit uniforms).
    pub fn at(&self, c: usize, t: usize, y: usize, x: usize) -> f32 {
        let mut h = mix(self.seed ^ 0x9e37_79b9_7f4a_7c15);
        for v in [c, t, y, x] {
            h = mix(h ^ (v as u64).wrapping_mul(0xd6e8_feb8_6659_fd93));
        }
        // u1 in (0, 1], u2 in [0, 1).
        let u1 = ((h >> 32) as f64 + 1.0) / 4_294_967_296.0;
        let u2 = (h & 0xffff_ffff) as f64 / 4_294_967_296.0;
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }

    /// The field over `[channels, frames, height, width]` latents whose top-left latent sits at
    /// global latent position (`y0`, `x0`).
    pub fn tile(
        &self,
        (channels, frames, height, width): (usize, usize, usize, usize),
        (y0, x0): (usize, usize),
        device: &Device,
    ) -> Result<Tensor> {
        let mut data = Vec::with_capacity(channels * frames * height * width);
        for c in 0..channels {
            for t in 0..frames {
                for y in 0..height {
                    for x in 0..width {
                        data.push(self.at(c, t, y0 + y, x0 + x));
                    }
                }
            }
        }
        Tensor::from_vec(data, (channels, frames, height, width), &Device::Cpu)?.to_device(device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_noise_and_tiles_agree_with_the_whole() -> Result<()> {
        let noise = FixedNoise::new(42);
        let whole = noise.tile((2, 3, 10, 12), (0, 0), &Device::Cpu)?;
        let tile = noise.tile((2, 3, 4, 5), (6, 7), &Device::Cpu)?;
        let from_whole = whole.narrow(2, 6, 4)?.narrow(3, 7, 5)?;
        let a: Vec<f32> = tile.flatten_all()?.to_vec1()?;
        let b: Vec<f32> = from_whole.flatten_all()?.to_vec1()?;
        assert_eq!(a, b);
        let again: Vec<f32> = noise
            .tile((2, 3, 4, 5), (6, 7), &Device::Cpu)?
            .flatten_all()?
            .to_vec1()?;
        assert_eq!(a, again);
        let other: Vec<f32> = FixedNoise::new(43)
            .tile((2, 3, 4, 5), (6, 7), &Device::Cpu)?
            .flatten_all()?
            .to_vec1()?;
        assert_ne!(a, other);
        Ok(())
    }

    #[test]
    fn values_are_standard_normal() {
        let noise = FixedNoise::new(7);
        let n = 200_000;
        let vals: Vec<f64> = (0..n)
            .map(|i| noise.at(i % 8, i / 8 % 5, i / 40 % 100, i / 4000) as f64)
            .collect();
        let mean = vals.iter().sum::<f64>() / n as f64;
        let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");
        // Neighbouring positions are uncorrelated.
        let corr = vals.windows(2).map(|w| w[0] * w[1]).sum::<f64>() / (n - 1) as f64;
        assert!(corr.abs() < 0.01, "lag-1 correlation {corr}");
    }
}
