//! Rotary position embedding over (frame, height, width): diffusers `LTXVideoRotaryPosEmbed` and
//! `apply_rotary_emb` (`diffusers/models/transformers/transformer_ltx.py`).
//!
//! The rotation spans the whole inner dimension `D` (all heads together, before the split into
//! heads): `D / 6` frequencies per axis, each used for a pair of channels, interleaved as
//! (freq, axis); the `D % 6` leftover channels come first and are not rotated (cos 1, sin 0).
//! Phases reach ~15,000 rad, so the grid and frequencies follow the reference's f32 operations in
//! its order: the cosines then agree to a few ulps.

use candle_core::{DType, Device, Result, Tensor};

/// `base_num_frames`, `base_height`, `base_width` and `theta` as LTXVideoTransformer3DModel
/// builds its `LTXVideoRotaryPosEmbed`.
const BASE: [f32; 3] = [20.0, 2048.0, 2048.0];
const THETA: f64 = 10000.0;

/// Where the tokens sit, for the rotary embedding.
#[derive(Debug, Clone, Copy)]
pub enum RopePositions<'a> {
    /// The (frames, height, width) grid of the latent in token order (frame-major), scaled by
    /// `rope_interpolation_scale` * patch size / base; `None` leaves the raw indices (diffusers'
    /// behaviour when `rope_interpolation_scale` is `None`).
    Grid {
        rope_interpolation_scale: Option<[f32; 3]>,
    },
    /// Explicit coordinates per token, (b, 3, n) (diffusers' `video_coords`), divided by the base.
    Coords(&'a Tensor),
}

/// The (cos, sin) pair, f32, each (1 or b, n, D).
#[derive(Debug, Clone)]
pub struct Rope {
    pub cos: Tensor,
    pub sin: Tensor,
}

/// diffusers `LTXVideoRotaryPosEmbed` for a model of inner dimension `dim`.
#[derive(Debug, Clone)]
pub struct LtxRotaryPosEmbed {
    dim: usize,
    patch_size: usize,
    patch_size_t: usize,
    /// `theta ** linspace(0, 1, dim // 6) * pi / 2`, f32
    freqs: Vec<f32>,
}

impl LtxRotaryPosEmbed {
    pub fn new(dim: usize, patch_size: usize, patch_size_t: usize) -> Self {
        let n = dim / 6;
        let freqs = (0..n)
            .map(|i| {
                // torch.linspace(0, 1, n) in f32: symmetric from both ends
                let step = if n > 1 { 1.0 / (n - 1) as f32 } else { 0.0 };
                // (steps = 1 gives `start`)
                let x = if n == 1 || i < n / 2 {
                    i as f32 * step
                } else {
                    1.0 - (n - 1 - i) as f32 * step
                };
                let f = THETA.powf(x as f64) as f32;
                (f * std::f32::consts::PI) / 2.0
            })
            .collect();
        Self {
            dim,
            patch_size,
            patch_size_t,
            freqs,
        }
    }

    /// cos and sin for `n = frames * height * width` tokens (checked by the caller) and `batch`.
    pub fn forward(
        &self,
        video_shape: (usize, usize, usize),
        positions: RopePositions,
        batch: usize,
        device: &Device,
    ) -> Result<Rope> {
        let (frames, height, width) = video_shape;
        let n = frames * height * width;
        match positions {
            RopePositions::Grid {
                rope_interpolation_scale,
            } => {
                // Per axis, the tables of cos and sin of (freq f, position p): (len, n_freqs).
                let axis = |len: usize, i: usize, patch: usize| -> (Vec<f32>, Vec<f32>) {
                    let coords: Vec<f32> = (0..len)
                        .map(|p| match rope_interpolation_scale {
                            Some(s) => ((p as f32 * s[i]) * patch as f32) / BASE[i],
                            None => p as f32,
                        })
                        .collect();
                    self.axis_tables(&coords)
                };
                let tf = axis(frames, 0, self.patch_size_t);
                let th = axis(height, 1, self.patch_size);
                let tw = axis(width, 2, self.patch_size);
                let nf = self.freqs.len();
                let mut cos = Vec::with_capacity(n * self.dim);
                let mut sin = Vec::with_capacity(n * self.dim);
                for f in 0..frames {
                    for h in 0..height {
                        for w in 0..width {
                            let at = [(&tf, f), (&th, h), (&tw, w)];
                            self.fill_token(&mut cos, &mut sin, |k, axis| {
                                let (table, p) = at[axis];
                                (table.0[p * nf + k], table.1[p * nf + k])
                            });
                        }
                    }
                }
                // (1, n, D): the same for every batch element
                let cos = Tensor::from_vec(cos, (1, n, self.dim), device)?;
                let sin = Tensor::from_vec(sin, (1, n, self.dim), device)?;
                Ok(Rope { cos, sin })
            }
            RopePositions::Coords(coords) => {
                if coords.dims() != [batch, 3, n] {
                    candle_core::bail!(
                        "video_coords has shape {:?}, expected (batch, 3, tokens) = ({batch}, 3, {n})",
                        coords.dims()
                    );
                }
                let c = coords.to_dtype(DType::F32)?.to_vec3::<f32>()?;
                let mut cos = Vec::with_capacity(batch * n * self.dim);
                let mut sin = Vec::with_capacity(batch * n * self.dim);
                for cb in &c {
                    // cb: (3, n) coordinates of one batch element
                    let (frames, rows, cols) = (&cb[0], &cb[1], &cb[2]);
                    for ((&cf, &ch), &cw) in frames.iter().zip(rows).zip(cols) {
                        let tables: Vec<(Vec<f32>, Vec<f32>)> = [cf, ch, cw]
                            .iter()
                            .zip(BASE)
                            .map(|(&x, base)| self.axis_tables(&[x / base]))
                            .collect();
                        self.fill_token(&mut cos, &mut sin, |k, axis| {
                            (tables[axis].0[k], tables[axis].1[k])
                        });
                    }
                }
                let cos = Tensor::from_vec(cos, (batch, n, self.dim), device)?;
                let sin = Tensor::from_vec(sin, (batch, n, self.dim), device)?;
                Ok(Rope { cos, sin })
            }
        }
    }

    /// cos and sin of `freq * (2 * coord - 1)` for each coordinate and frequency, (len, n_freqs).
    fn axis_tables(&self, coords: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let mut c = Vec::with_capacity(coords.len() * self.freqs.len());
        let mut s = Vec::with_capacity(coords.len() * self.freqs.len());
        for &x in coords {
            let g = x * 2.0 - 1.0;
            for &f in &self.freqs {
                let phase = f * g;
                c.push(phase.cos());
                s.push(phase.sin());
            }
        }
        (c, s)
    }

    /// Appends one token's D channels: `dim % 6` unrotated channels, then for each frequency `k`
    /// and axis, the pair (value, value).
    fn fill_token(
        &self,
        cos: &mut Vec<f32>,
        sin: &mut Vec<f32>,
        value: impl Fn(usize, usize) -> (f32, f32),
    ) {
        let pad = self.dim % 6;
        cos.extend(std::iter::repeat_n(1.0, pad));
        sin.extend(std::iter::repeat_n(0.0, pad));
        for k in 0..self.freqs.len() {
            for axis in 0..3 {
                let (c, s) = value(k, axis);
                cos.extend([c, c]);
                sin.extend([s, s]);
            }
        }
    }
}

/// `apply_rotary_emb`: `x * cos + rotate(x) * sin` with `rotate` mapping each channel pair
/// (a, b) to (-b, a); computed in f32, returned in `x`'s dtype. `x`: (b, n, D).
pub fn apply_rotary_emb(x: &Tensor, rope: &Rope) -> Result<Tensor> {
    let dtype = x.dtype();
    let (b, n, d) = x.dims3()?;
    let x32 = x.to_dtype(DType::F32)?;
    // (b, n, D) -> (b, n, D/2, 2)
    let pairs = x32.reshape((b, n, d / 2, 2))?;
    let real = pairs.narrow(3, 0, 1)?;
    let imag = pairs.narrow(3, 1, 1)?;
    // (b, n, D/2, 2) -> (b, n, D)
    let rotated = Tensor::cat(&[&imag.neg()?, &real], 3)?.reshape((b, n, d))?;
    x32.broadcast_mul(&rope.cos)?
        .add(&rotated.broadcast_mul(&rope.sin)?)?
        .to_dtype(dtype)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_pads_unrotated_channels_first() -> Result<()> {
        // D = 16: 2 frequencies x 3 axes x 2 channels, 4 padding channels
        let rope = LtxRotaryPosEmbed::new(16, 1, 1);
        let r = rope.forward(
            (2, 1, 3),
            RopePositions::Grid {
                rope_interpolation_scale: Some([0.32, 32.0, 32.0]),
            },
            1,
            &Device::Cpu,
        )?;
        assert_eq!(r.cos.dims(), &[1, 6, 16]);
        let cos = r.cos.to_vec3::<f32>()?;
        let sin = r.sin.to_vec3::<f32>()?;
        assert_eq!(&cos[0][5][..4], &[1.0; 4]);
        assert_eq!(&sin[0][5][..4], &[0.0; 4]);
        // channel pairs share a value; frequency 0 is pi/2, axis 2 (width) at w = 2 of token 5
        assert_eq!(cos[0][5][4], cos[0][5][5]);
        let phase = std::f32::consts::FRAC_PI_2 * ((2.0 * 32.0 / 2048.0) * 2.0 - 1.0);
        assert!((cos[0][5][8] - phase.cos()).abs() < 1e-6);
        Ok(())
    }

    #[test]
    fn rotation_keeps_pair_norms() -> Result<()> {
        let x = Tensor::new(&[[[3f32, 4.0, 1.0, 0.0]]], &Device::Cpu)?;
        let angle = 0.7f32;
        let rope = Rope {
            cos: Tensor::new(&[[[angle.cos(); 4]]], &Device::Cpu)?,
            sin: Tensor::new(&[[[angle.sin(); 4]]], &Device::Cpu)?,
        };
        let y = apply_rotary_emb(&x, &rope)?.to_vec3::<f32>()?;
        // (3, 4) rotated by 0.7 rad
        assert!((y[0][0][0] - (3.0 * angle.cos() - 4.0 * angle.sin())).abs() < 1e-6);
        assert!((y[0][0][1] - (4.0 * angle.cos() + 3.0 * angle.sin())).abs() < 1e-6);
        assert!((y[0][0][3] - angle.sin()).abs() < 1e-6);
        Ok(())
    }
}
