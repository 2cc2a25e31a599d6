//! Spatial tiles for denoising latents larger than the training tile (paper §3.5,
//! MultiDiffusion; DESIGN §5): tiles of the training size with an overlap, each denoised for one
//! step, averaged with Gaussian weights (sigma = tile / 4 around each tile's centre) before the
//! next step.

use candle_core::{Device, Result, Tensor};

/// One tile: its top-left latent and its size, in latents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tile {
    pub y: usize,
    pub x: usize,
    pub height: usize,
    pub width: usize,
}

/// Start offsets of tiles of `tile` latents with `overlap` along an axis of `n` latents: evenly
/// stepped by `tile - overlap`, the last one flush with the end; one tile if `n <= tile`.
fn axis_starts(n: usize, tile: usize, overlap: usize) -> Vec<usize> {
    if n <= tile {
        return vec![0];
    }
    let stride = tile.saturating_sub(overlap).max(1);
    let mut starts: Vec<usize> = (0..)
        .map(|k| k * stride)
        .take_while(|s| s + tile < n)
        .collect();
    starts.push(n - tile);
    starts
}

/// The tiles covering a `height` x `width` latent.
pub fn plan_tiles(height: usize, width: usize, tile: (usize, usize), overlap: usize) -> Vec<Tile> {
    let ys = axis_starts(height, tile.0, overlap);
    let xs = axis_starts(width, tile.1, overlap);
    ys.iter()
        .flat_map(|&y| {
            xs.iter().map(move |&x| Tile {
                y,
                x,
                height: tile.0.min(height),
                width: tile.1.min(width),
            })
        })
        .collect()
}

/// Gaussian weights of a tile, `[height, width]`, sigma = size / 4 per axis, peak 1 at the centre.
pub fn gaussian_weights(height: usize, width: usize, device: &Device) -> Result<Tensor> {
    let axis = |n: usize| -> Vec<f32> {
        let centre = (n as f64 - 1.0) / 2.0;
        let sigma = n as f64 / 4.0;
        (0..n)
            .map(|i| (-((i as f64 - centre).powi(2)) / (2.0 * sigma * sigma)).exp() as f32)
            .collect()
    };
    let wy = Tensor::from_vec(axis(height), (height, 1), device)?;
    let wx = Tensor::from_vec(axis(width), (1, width), device)?;
    wy.broadcast_mul(&wx)
}

/// Averages per-tile predictions (each `[..., tile.height, tile.width]`) into one
/// `[..., height, width]` tensor with Gaussian weights. A single tile covering everything is
/// returned as is, so a frame that fits one tile gives exactly the untiled result.
pub fn blend_tiles(tiles: &[(Tile, Tensor)], height: usize, width: usize) -> Result<Tensor> {
    let Some((first_tile, first)) = tiles.first() else {
        candle_core::bail!("blend_tiles: no tiles");
    };
    if tiles.len() == 1 && (first_tile.height, first_tile.width) == (height, width) {
        return Ok(first.clone());
    }
    let mut sum: Option<Tensor> = None;
    let mut weight_sum: Option<Tensor> = None;
    for (tile, pred) in tiles {
        let w = gaussian_weights(tile.height, tile.width, pred.device())?.to_dtype(pred.dtype())?;
        // Zero-pad the weighted tile to the full latent and accumulate.
        let place = |t: &Tensor| -> Result<Tensor> {
            let r = t.rank();
            t.pad_with_zeros(r - 2, tile.y, height - tile.y - tile.height)?
                .pad_with_zeros(r - 1, tile.x, width - tile.x - tile.width)
        };
        let weighted = place(&pred.broadcast_mul(&w)?)?;
        let w_full = place(&w.reshape((tile.height, tile.width))?)?;
        sum = Some(match sum {
            None => weighted,
            Some(s) => (s + weighted)?,
        });
        weight_sum = Some(match weight_sum {
            None => w_full,
            Some(s) => (s + w_full)?,
        });
    }
    let (Some(sum), Some(weight_sum)) = (sum, weight_sum) else {
        candle_core::bail!("blend_tiles: no tiles");
    };
    sum.broadcast_div(&weight_sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_cover_every_latent_with_the_overlap() {
        for (h, w) in [(32, 32), (20, 70), (64, 96), (33, 57), (5, 5)] {
            let tiles = plan_tiles(h, w, (32, 32), 8);
            let mut covered = vec![0u32; h * w];
            for t in &tiles {
                assert!(
                    t.y + t.height <= h && t.x + t.width <= w,
                    "{t:?} in {h}x{w}"
                );
                for y in t.y..t.y + t.height {
                    for x in t.x..t.x + t.width {
                        covered[y * w + x] += 1;
                    }
                }
            }
            assert!(covered.iter().all(|c| *c >= 1), "{h}x{w} not covered");
        }
        assert_eq!(plan_tiles(32, 32, (32, 32), 8).len(), 1);
        // 96 = 32 + 24 + 24 + 16: starts 0, 24, 48, 64.
        let xs: Vec<usize> = plan_tiles(32, 96, (32, 32), 8)
            .iter()
            .map(|t| t.x)
            .collect();
        assert_eq!(xs, vec![0, 24, 48, 64]);
    }

    #[test]
    fn one_tile_is_exactly_the_untiled_result() -> Result<()> {
        let x = Tensor::randn(0f32, 1.0, (4, 2, 16, 24), &Device::Cpu)?;
        let tiles = plan_tiles(16, 24, (32, 32), 8);
        assert_eq!(tiles.len(), 1);
        let out = blend_tiles(&[(tiles[0], x.clone())], 16, 24)?;
        let a: Vec<f32> = out.flatten_all()?.to_vec1()?;
        let b: Vec<f32> = x.flatten_all()?.to_vec1()?;
        assert_eq!(a, b);
        Ok(())
    }

    #[test]
    fn consistent_tiles_blend_back_to_the_whole() -> Result<()> {
        // Tiles cut from one tensor agree where they overlap: the blend reproduces it.
        let whole = Tensor::randn(0f32, 1.0, (3, 40, 70), &Device::Cpu)?;
        let tiles: Vec<(Tile, Tensor)> = plan_tiles(40, 70, (16, 32), 8)
            .into_iter()
            .map(|t| {
                let p = whole.narrow(1, t.y, t.height)?.narrow(2, t.x, t.width)?;
                Ok((t, p))
            })
            .collect::<Result<_>>()?;
        assert!(tiles.len() > 4);
        let out = blend_tiles(&tiles, 40, 70)?;
        let err = (out - &whole)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(err < 1e-5, "max error {err}");
        Ok(())
    }

    #[test]
    fn gaussian_peaks_at_the_centre() -> Result<()> {
        let w = gaussian_weights(8, 8, &Device::Cpu)?.to_vec2::<f32>()?;
        assert!(w[3][3] > w[0][0] && w[4][4] > w[7][0]);
        assert!((w[3][3] - w[4][4]).abs() < 1e-7, "symmetric");
        // sigma = 2, centre 3.5: row 1 is 2.5 away, column 3 is 0.5 away; 2 sigma^2 = 8.
        let expected = (-6.25f64 / 8.0).exp() * (-0.25f64 / 8.0).exp();
        assert!((w[1][3] as f64 - expected).abs() < 1e-6);
        Ok(())
    }
}
