//! The decoder's noise injection draws from this seeded generator (diffusers draws from torch's
//! global generator, which is not reproducible outside torch). Same seed, same noise, on any device:
//! the samples are made on the host.

use candle_core::{Device, Result, Tensor};

/// A seeded standard-normal generator: SplitMix64 for the bits, Box-Muller for the normals.
#[derive(Debug, Clone)]
pub struct NoiseSource {
    state: u64,
    spare: Option<f32>,
}

impl NoiseSource {
    pub fn new(seed: u64) -> Self {
        Self {
            state: seed,
            spare: None,
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1], from the top 53 bits.
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    pub fn normal(&mut self) -> f32 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let r = (-2.0 * self.uniform().ln()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * self.uniform();
        self.spare = Some((r * theta.sin()) as f32);
        (r * theta.cos()) as f32
    }

    /// A (h, w) field of standard normals in f32 on `device`.
    pub fn field(&mut self, h: usize, w: usize, device: &Device) -> Result<Tensor> {
        let v: Vec<f32> = (0..h * w).map(|_| self.normal()).collect();
        Tensor::from_vec(v, (h, w), device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_standard_normal_and_seeded() -> Result<()> {
        let mut a = NoiseSource::new(7);
        let n = 200_000;
        let v: Vec<f64> = (0..n).map(|_| a.normal() as f64).collect();
        let mean = v.iter().sum::<f64>() / n as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let kurt = v.iter().map(|x| (x - mean).powi(4)).sum::<f64>() / n as f64 / (var * var);
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.01, "variance {var}");
        assert!((kurt - 3.0).abs() < 0.05, "kurtosis {kurt}");
        // Lag-1 correlation: successive draws are independent.
        let corr = v.windows(2).map(|w| w[0] * w[1]).sum::<f64>() / (n - 1) as f64;
        assert!(corr.abs() < 0.01, "lag-1 correlation {corr}");

        let f1 = NoiseSource::new(3).field(4, 5, &Device::Cpu)?;
        let f2 = NoiseSource::new(3).field(4, 5, &Device::Cpu)?;
        let f3 = NoiseSource::new(4).field(4, 5, &Device::Cpu)?;
        assert_eq!(f1.to_vec2::<f32>()?, f2.to_vec2::<f32>()?);
        assert_ne!(f1.to_vec2::<f32>()?, f3.to_vec2::<f32>()?);
        Ok(())
    }
}
