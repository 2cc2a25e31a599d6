//! Spatial tiles for denoising latents larger than the training tile (paper §3.5,
//! MultiDiffusion; DESIGN §5): tiles of the training size with an overlap, each denoised for one
//! step, averaged with Gaussian weights (sigma = tile / 4 around each tile's centre) before the
//! next step.

use candle_core::{DType, Device, Result, Tensor};

use super::tokens::{pack_latents, unpack_latents};
use super::VelocityModel;

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

/// Gaussian weights along one axis of `n` latents: sigma = n / 4 around the centre, peak 1.
/// With `taper_start` / `taper_end`, that half is lowered linearly in the Gaussian's value so
/// that it would reach 0 one latent outside the tile.
fn axis_weights(n: usize, taper_start: bool, taper_end: bool) -> Vec<f32> {
    let centre = (n as f64 - 1.0) / 2.0;
    let sigma = n as f64 / 4.0;
    let g = |i: f64| (-((i - centre).powi(2)) / (2.0 * sigma * sigma)).exp();
    // The value one latent outside either end (the Gaussian is symmetric).
    let outside = g(-1.0);
    (0..n)
        .map(|i| {
            let v = g(i as f64);
            let taper = if (i as f64) < centre {
                taper_start
            } else {
                taper_end
            };
            (if taper {
                (v - outside) / (1.0 - outside)
            } else {
                v
            }) as f32
        })
        .collect()
}

/// Gaussian weights of a tile, `[height, width]`, sigma = size / 4 per axis, peak 1 at the centre.
pub fn gaussian_weights(height: usize, width: usize, device: &Device) -> Result<Tensor> {
    // A tile that is the whole latent has no inner edge to fade towards.
    let whole = Tile {
        y: 0,
        x: 0,
        height,
        width,
    };
    tile_weights(&whole, height, width, device)
}

/// The blending weights of `tile` in a `height` x `width` latent, `[tile.height, tile.width]`:
/// the tile's Gaussian (sigma = size / 4, DESIGN §5), lowered on each side where the tile ends
/// inside the latent so that it fades to 0 there instead of stopping at e^-2 of its peak. A
/// truncated Gaussian steps from 0.135 to 0 at the tile's edge, and a model whose output depends
/// on the tile's context turns that step into a visible seam (measured by
/// `blended_tiles_leave_no_seams_where_hard_tiles_do`). Sides on the latent's border keep the
/// plain Gaussian, and every latent keeps a positive weight in its own tile.
pub fn tile_weights(tile: &Tile, height: usize, width: usize, device: &Device) -> Result<Tensor> {
    let wy = axis_weights(tile.height, tile.y > 0, tile.y + tile.height < height);
    let wx = axis_weights(tile.width, tile.x > 0, tile.x + tile.width < width);
    let wy = Tensor::from_vec(wy, (tile.height, 1), device)?;
    let wx = Tensor::from_vec(wx, (1, tile.width), device)?;
    wy.broadcast_mul(&wx)
}

/// Averages per-tile predictions (each `[..., tile.height, tile.width]`) into one
/// `[..., height, width]` tensor with the tiles' [`tile_weights`]. A single tile covering everything is
/// returned as is, so a frame that fits one tile gives exactly the untiled result.
pub fn blend_tiles(tiles: &[(Tile, Tensor)], height: usize, width: usize) -> Result<Tensor> {
    let Some((first_tile, first)) = tiles.first() else {
        candle_core::bail!("blend_tiles: no tiles");
    };
    if tiles.len() == 1 && (first_tile.height, first_tile.width) == (height, width) {
        return Ok(first.clone());
    }
    if first.device().is_cpu() && first.dtype() == DType::F32 {
        return blend_tiles_host(tiles, height, width);
    }
    blend_tiles_padded(tiles, height, width)
}

/// [`blend_tiles`] on host f32 tiles: each tile's weighted values are added into one output
/// buffer in place, so the cost is the tiles' own size (padding every tile to the whole latent
/// made a window of 209 tiles move 209 whole latents per step, which took most of a small
/// model's time in page faults).
fn blend_tiles_host(tiles: &[(Tile, Tensor)], height: usize, width: usize) -> Result<Tensor> {
    let (_, first) = &tiles[0];
    let dims = first.dims();
    let rank = dims.len();
    if rank < 2 {
        candle_core::bail!("blend_tiles: tiles need at least 2 dimensions, got {dims:?}");
    }
    let lead = &dims[..rank - 2];
    let planes: usize = lead.iter().product();
    let mut sum = vec![0f32; planes * height * width];
    let mut weight_sum = vec![0f32; height * width];
    for (tile, pred) in tiles {
        let want: Vec<usize> = lead
            .iter()
            .copied()
            .chain([tile.height, tile.width])
            .collect();
        if pred.dims() != want.as_slice()
            || tile.y + tile.height > height
            || tile.x + tile.width > width
        {
            candle_core::bail!(
                "blend_tiles: a tile at ({}, {}) has shape {:?}, expected {want:?} inside {height}x{width}",
                tile.y,
                tile.x,
                pred.dims()
            );
        }
        let w = tile_weights(tile, height, width, &Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let values = pred.flatten_all()?.to_vec1::<f32>()?;
        let tile_plane = tile.height * tile.width;
        for (r, w_row) in w.chunks_exact(tile.width).enumerate() {
            let at = (tile.y + r) * width + tile.x;
            for (acc, &wv) in weight_sum[at..at + tile.width].iter_mut().zip(w_row) {
                *acc += wv;
            }
            for plane in 0..planes {
                let src = &values[plane * tile_plane + r * tile.width..][..tile.width];
                let dst = &mut sum[plane * height * width + at..][..tile.width];
                for ((d, &v), &wv) in dst.iter_mut().zip(src).zip(w_row) {
                    *d += v * wv;
                }
            }
        }
    }
    for plane in sum.chunks_exact_mut(height * width) {
        for (v, &ws) in plane.iter_mut().zip(&weight_sum) {
            *v /= ws;
        }
    }
    let shape: Vec<usize> = lead.iter().copied().chain([height, width]).collect();
    Tensor::from_vec(sum, shape, &Device::Cpu)
}

/// [`blend_tiles`] with candle ops on any device: each weighted tile zero-padded to the whole
/// latent and summed.
fn blend_tiles_padded(tiles: &[(Tile, Tensor)], height: usize, width: usize) -> Result<Tensor> {
    let mut sum: Option<Tensor> = None;
    let mut weight_sum: Option<Tensor> = None;
    for (tile, pred) in tiles {
        let w = tile_weights(tile, height, width, pred.device())?.to_dtype(pred.dtype())?;
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

/// A velocity model that runs on any spatial sub-grid of the latent: MultiDiffusion evaluates it
/// once per tile, each tile seeing only its own tokens (and its own condition, which the model
/// cuts from the window's with `tile`).
pub trait TileVelocity {
    /// `x` holds the tile's tokens `[1, n, C]` (packed like the window's, frame-major) and
    /// `timestep` their timesteps `[1, n]`; returns the velocity of those tokens.
    fn tile_velocity(
        &mut self,
        tile: &Tile,
        x: &Tensor,
        timestep: &Tensor,
        step_size: f64,
    ) -> Result<Tensor>;
}

/// MultiDiffusion over spatial tiles (paper §3.5, DESIGN §5) as a [`VelocityModel`] on the
/// window's tokens: each step every tile is evaluated on its own, and the tiles' velocities are
/// averaged with Gaussian weights. The Euler update is linear in the velocity, so this is the
/// same as averaging the tiles' denoised latents before the next step. The noise is indexed by
/// global latent position, so overlapping tiles start from the same noise.
pub struct TiledVelocity<M> {
    pub model: M,
    /// The window's latent grid (frames, height, width).
    pub grid: (usize, usize, usize),
    /// Patch size (spatial, temporal) of the token packing.
    pub patch: (usize, usize),
    /// Tiles in latents, whole patches each.
    pub tiles: Vec<Tile>,
}

impl<M: TileVelocity> VelocityModel for TiledVelocity<M> {
    fn velocity(&mut self, x: &Tensor, timestep: &Tensor, step_size: f64) -> Result<Tensor> {
        let (t, h, w) = self.grid;
        let (p, pt) = self.patch;
        let z = unpack_latents(x, (t, h, w), p, pt)?;
        // (1, N) -> (1, frames, rows, columns) of tokens, in the packed (frame-major) order.
        let ts = timestep.reshape((1, t / pt, h / p, w / p))?;
        let mut velocities = Vec::with_capacity(self.tiles.len());
        for tile in &self.tiles {
            let z_tile = z
                .narrow(3, tile.y, tile.height)?
                .narrow(4, tile.x, tile.width)?;
            let ts_tile = ts
                .narrow(2, tile.y / p, tile.height / p)?
                .narrow(3, tile.x / p, tile.width / p)?
                .flatten_from(1)?;
            let v = self.model.tile_velocity(
                tile,
                &pack_latents(&z_tile, p, pt)?,
                &ts_tile,
                step_size,
            )?;
            velocities.push((
                *tile,
                unpack_latents(&v, (t, tile.height, tile.width), p, pt)?,
            ));
        }
        pack_latents(&blend_tiles(&velocities, h, w)?, p, pt)
    }
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
    fn the_host_blend_matches_the_padded_one() -> Result<()> {
        // Different values in the overlaps, so the weights matter.
        let tiles: Vec<(Tile, Tensor)> = plan_tiles(40, 70, (16, 32), 8)
            .into_iter()
            .map(|t| {
                Ok((
                    t,
                    Tensor::randn(0f32, 1.0, (2, 3, t.height, t.width), &Device::Cpu)?,
                ))
            })
            .collect::<Result<_>>()?;
        let host = blend_tiles(&tiles, 40, 70)?;
        assert_eq!(host.dims(), &[2, 3, 40, 70]);
        let padded = blend_tiles_padded(&tiles, 40, 70)?;
        let err = (host - padded)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(err < 1e-5, "max difference {err}");
        let bad = vec![(
            tiles[0].0,
            Tensor::zeros((2, 3, 5, 5), DType::F32, &Device::Cpu)?,
        )];
        assert!(blend_tiles(&bad, 40, 70).is_err());
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

    /// A model whose velocity depends on the whole tile it sees: every token is pulled towards
    /// the tile's mean (per channel), as attention spreads context over a tile. Tiles with
    /// different content disagree, which shows as seams unless the blending hides them.
    struct TileMean;

    impl TileVelocity for TileMean {
        fn tile_velocity(&mut self, _: &Tile, x: &Tensor, _: &Tensor, _: f64) -> Result<Tensor> {
            x.broadcast_sub(&x.mean_keepdim(1)?)
        }
    }

    /// Mean absolute difference between latent columns `x - 1` and `x` (`axis` 4) or rows (3),
    /// over the given positions, of a (1, C, t, h, w) latent.
    fn step_across(z: &Tensor, axis: usize, at: &[usize]) -> Result<f64> {
        let mut sum = 0f64;
        for &i in at {
            let d = (z.narrow(axis, i, 1)? - z.narrow(axis, i - 1, 1)?)?.abs()?;
            sum += d.mean_all()?.to_scalar::<f32>()? as f64;
        }
        Ok(sum / at.len() as f64)
    }

    /// Samples a smooth (1, 3, 2, 12, 16) latent with [`TileMean`] over tiles of 8 latents.
    fn sample_tiled(overlap: usize) -> Result<(Tensor, Vec<Tile>)> {
        let (c, t, h, w) = (3, 2, 12, 16);
        let field: Vec<f32> = (0..c * t * h * w)
            .map(|i| {
                let (x, y) = ((i % w) as f32, ((i / w) % h) as f32);
                let (f, ch) = (((i / (w * h)) % t) as f32, (i / (w * h * t)) as f32);
                (x / 2.5 + ch).sin() + (y / 3.1 - ch).cos() + 0.3 * f
            })
            .collect();
        let z = Tensor::from_vec(field, (1, c, t, h, w), &Device::Cpu)?;
        let tiles = plan_tiles(h, w, (8, 8), overlap);
        let mut model = TiledVelocity {
            model: TileMean,
            grid: (t, h, w),
            patch: (1, 1),
            tiles: tiles.clone(),
        };
        let x = pack_latents(&z, 1, 1)?;
        let n = x.dim(1)?;
        let steps = crate::sample::plan(
            4,
            n,
            &crate::sample::ShiftConfig::default(),
            &crate::sample::default_step_sizes(),
        )
        .map_err(candle_core::Error::wrap)?;
        let clean = Tensor::zeros((1, n), candle_core::DType::F32, &Device::Cpu)?;
        let out = crate::sample::sample(&mut model, &x, &clean, &steps)?;
        Ok((unpack_latents(&out, (t, h, w), 1, 1)?, tiles))
    }

    #[test]
    fn blended_tiles_leave_no_seams_where_hard_tiles_do() -> Result<()> {
        // 12 x 16 latents in tiles of 8 with overlap 4: 2 rows x 3 columns of tiles, whose inner
        // edges are columns 4, 8, 12 and rows 4, 8. Measured: 1.05x (columns) and 1.15x (rows)
        // the step inside tiles; with the plain truncated Gaussian 1.27x and 1.36x; tiles that
        // meet edge to edge 8.3x.
        let (z, tiles) = sample_tiled(4)?;
        assert_eq!(tiles.len(), 6);
        let inside_x: Vec<usize> = (1..16).filter(|x| x % 4 != 0).collect();
        let inside_y: Vec<usize> = (1..12).filter(|y| y % 4 != 0).collect();
        let (border_x, inner_x) = (
            step_across(&z, 4, &[4, 8, 12])?,
            step_across(&z, 4, &inside_x)?,
        );
        let (border_y, inner_y) = (step_across(&z, 3, &[4, 8])?, step_across(&z, 3, &inside_y)?);
        assert!(
            border_x <= 1.25 * inner_x && border_y <= 1.25 * inner_y,
            "seams: columns {border_x:.4} across tile edges vs {inner_x:.4} inside, \
             rows {border_y:.4} vs {inner_y:.4}"
        );
        // The same measure sees the seam of tiles that meet edge to edge (columns 0..8, 8..16).
        let (hard, _) = sample_tiled(0)?;
        let seam = step_across(&hard, 4, &[8])?;
        let inside = step_across(&hard, 4, &inside_x)?;
        assert!(
            seam > 2.0 * inside,
            "hard tiles: {seam:.4} at the edge vs {inside:.4} inside"
        );
        Ok(())
    }
}
