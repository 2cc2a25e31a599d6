//! Tiled encode and decode in space and time with linearly blended overlaps, mirroring
//! `AutoencoderKLLTXVideo.tiled_encode`, `tiled_decode`, `_temporal_tiled_encode` and
//! `_temporal_tiled_decode` of diffusers 0.42.1 (`autoencoder_kl_ltx.py`), so that one forward
//! pass never sees more than one tile and memory is bounded by the tile size.
//!
//! diffusers' `blend_v/h/t` write into the current tile in place, so a tile that is later the
//! "previous" tile of a neighbour is already blended; the code below keeps that order.
//!
//! Known quirk kept for parity: from 4 latent frames (33 frames) on, the reference's temporal tiled
//! decode blends the first tile's tail one frame out of step with the second tile (the first tile
//! keeps its last frame, later tiles drop theirs), so later frames lag by one frame and the last
//! decoded frame is cropped. See `temporal_tiles_match_the_reference_on_consistent_maps`.

use candle_core::{Result, Tensor};

/// Tile sizes and strides in samples (pixels and frames), as diffusers' `enable_tiling`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VaeTiling {
    /// Tile in height and width (diffusers' `use_tiling`).
    pub spatial: bool,
    /// Tile in time (diffusers' `use_framewise_decoding`, which gates both directions).
    pub temporal: bool,
    pub tile_sample_min_height: usize,
    pub tile_sample_min_width: usize,
    pub tile_sample_min_num_frames: usize,
    pub tile_sample_stride_height: usize,
    pub tile_sample_stride_width: usize,
    pub tile_sample_stride_num_frames: usize,
}

impl Default for VaeTiling {
    /// diffusers' defaults, both directions off.
    fn default() -> Self {
        Self {
            spatial: false,
            temporal: false,
            tile_sample_min_height: 512,
            tile_sample_min_width: 512,
            tile_sample_min_num_frames: 16,
            tile_sample_stride_height: 448,
            tile_sample_stride_width: 448,
            tile_sample_stride_num_frames: 8,
        }
    }
}

impl VaeTiling {
    /// Checks that strides are positive and no larger than the tiles.
    pub fn validate(&self) -> Result<()> {
        let pairs = [
            (
                "height",
                self.tile_sample_min_height,
                self.tile_sample_stride_height,
            ),
            (
                "width",
                self.tile_sample_min_width,
                self.tile_sample_stride_width,
            ),
            (
                "frames",
                self.tile_sample_min_num_frames,
                self.tile_sample_stride_num_frames,
            ),
        ];
        for (name, min, stride) in pairs {
            if stride == 0 || stride > min {
                candle_core::bail!(
                    "VAE tiling: {name} stride {stride} must be in 1..={min} (the tile size)"
                );
            }
        }
        Ok(())
    }
}

/// Blends the last `extent` entries of `a` into the first `extent` of `b` along `dim`:
/// `b[y] = a[-extent + y] * (1 - y / extent) + b[y] * (y / extent)`, extent clipped to both sizes.
fn blend(a: &Tensor, b: &Tensor, extent: usize, dim: usize) -> Result<Tensor> {
    let (na, nb) = (a.dim(dim)?, b.dim(dim)?);
    let e = extent.min(na).min(nb);
    if e == 0 {
        return Ok(b.clone());
    }
    let mut wshape = vec![1usize; b.rank()];
    wshape[dim] = e;
    let w: Vec<f32> = (0..e).map(|y| (y as f64 / e as f64) as f32).collect();
    let w = Tensor::from_vec(w, wshape, b.device())?.to_dtype(b.dtype())?;
    let a_tail = a.narrow(dim, na - e, e)?;
    let b_head = b.narrow(dim, 0, e)?;
    let mixed = (a_tail.broadcast_mul(&(1.0 - &w)?)? + b_head.broadcast_mul(&w)?)?;
    if e == nb {
        Ok(mixed)
    } else {
        Tensor::cat(&[&mixed, &b.narrow(dim, e, nb - e)?], dim)
    }
}

/// First `len` entries along `dim` (fewer if the tensor is shorter), or `None` if empty.
fn head(x: &Tensor, dim: usize, len: usize) -> Result<Option<Tensor>> {
    let n = x.dim(dim)?.min(len);
    Ok(if n == 0 {
        None
    } else {
        Some(x.narrow(dim, 0, n)?)
    })
}

/// Concatenates the non-empty parts along `dim`.
fn cat_parts(parts: &[Tensor], dim: usize) -> Result<Tensor> {
    let parts: Vec<&Tensor> = parts.iter().filter(|t| t.dims()[dim] > 0).collect();
    Tensor::cat(&parts, dim)
}

/// Runs `f` on overlapping (height, width) tiles of `x` (b, c, t, h, w) and blends the outputs.
/// `tile_in`/`stride_in` are in input units, `tile_out`/`stride_out` in output units, `out_hw`
/// the output size. Mirrors the tile loops of `tiled_encode` and `tiled_decode`.
pub fn spatial_tiles(
    x: &Tensor,
    tile_in: (usize, usize),
    stride_in: (usize, usize),
    tile_out: (usize, usize),
    stride_out: (usize, usize),
    out_hw: (usize, usize),
    f: &mut dyn FnMut(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let (_, _, _, h, w) = x.dims5()?;
    let blend_h = tile_out.0 - stride_out.0;
    let blend_w = tile_out.1 - stride_out.1;
    let mut rows: Vec<Vec<Tensor>> = Vec::new();
    for i in (0..h).step_by(stride_in.0) {
        let mut row = Vec::new();
        for j in (0..w).step_by(stride_in.1) {
            let tile = x
                .narrow(3, i, tile_in.0.min(h - i))?
                .narrow(4, j, tile_in.1.min(w - j))?;
            row.push(f(&tile)?);
        }
        rows.push(row);
    }
    let mut result_rows = Vec::with_capacity(rows.len());
    for i in 0..rows.len() {
        let mut result_row = Vec::with_capacity(rows[i].len());
        for j in 0..rows[i].len() {
            let mut tile = rows[i][j].clone();
            if i > 0 {
                tile = blend(&rows[i - 1][j], &tile, blend_h, 3)?;
            }
            if j > 0 {
                tile = blend(&rows[i][j - 1], &tile, blend_w, 4)?;
            }
            rows[i][j] = tile.clone();
            let th = tile.dim(3)?.min(stride_out.0);
            let tw = tile.dim(4)?.min(stride_out.1);
            result_row.push(tile.narrow(3, 0, th)?.narrow(4, 0, tw)?);
        }
        result_rows.push(cat_parts(&result_row, 4)?);
    }
    let out = cat_parts(&result_rows, 3)?;
    let oh = out.dim(3)?.min(out_hw.0);
    let ow = out.dim(4)?.min(out_hw.1);
    out.narrow(3, 0, oh)?.narrow(4, 0, ow)
}

/// `_temporal_tiled_encode`: encodes frames `[i, i + tile + 1)` for i in steps of `stride`,
/// drops each later tile's first latent, blends `tile/r - stride/r` latents.
pub fn temporal_tiled_encode(
    x: &Tensor,
    t: &VaeTiling,
    ratio: usize,
    f: &mut dyn FnMut(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let frames = x.dim(2)?;
    let latent_frames = (frames - 1) / ratio + 1;
    let tile_lat = t.tile_sample_min_num_frames / ratio;
    let stride_lat = t.tile_sample_stride_num_frames / ratio;
    let blend_n = tile_lat.saturating_sub(stride_lat);
    let mut row: Vec<Tensor> = Vec::new();
    for i in (0..frames).step_by(t.tile_sample_stride_num_frames) {
        let n = (t.tile_sample_min_num_frames + 1).min(frames - i);
        let mut tile = f(&x.narrow(2, i, n)?)?;
        if i > 0 {
            let len = tile.dim(2)?;
            tile = tile.narrow(2, 1, len - 1)?;
        }
        row.push(tile);
    }
    let mut parts = Vec::with_capacity(row.len());
    for i in 0..row.len() {
        if i > 0 {
            let tile = blend(&row[i - 1], &row[i], blend_n, 2)?;
            row[i] = tile.clone();
            parts.extend(head(&tile, 2, stride_lat)?);
        } else {
            parts.extend(head(&row[0], 2, stride_lat + 1)?);
        }
    }
    let out = cat_parts(&parts, 2)?;
    let n = out.dim(2)?.min(latent_frames);
    out.narrow(2, 0, n)
}

/// `_temporal_tiled_decode`: decodes latents `[i, i + tile/r + 1)` for i in steps of `stride/r`,
/// drops each later tile's last frame, blends `tile - stride` frames.
pub fn temporal_tiled_decode(
    z: &Tensor,
    t: &VaeTiling,
    ratio: usize,
    f: &mut dyn FnMut(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let frames = z.dim(2)?;
    let sample_frames = (frames - 1) * ratio + 1;
    let tile_lat = t.tile_sample_min_num_frames / ratio;
    let stride_lat = (t.tile_sample_stride_num_frames / ratio).max(1);
    let blend_n = t
        .tile_sample_min_num_frames
        .saturating_sub(t.tile_sample_stride_num_frames);
    let mut row: Vec<Tensor> = Vec::new();
    for i in (0..frames).step_by(stride_lat) {
        let n = (tile_lat + 1).min(frames - i);
        let mut dec = f(&z.narrow(2, i, n)?)?;
        if i > 0 {
            let len = dec.dim(2)?;
            dec = dec.narrow(2, 0, len - 1)?;
        }
        row.push(dec);
    }
    let stride = t.tile_sample_stride_num_frames;
    let mut parts = Vec::with_capacity(row.len());
    for i in 0..row.len() {
        if i > 0 {
            let tile = blend(&row[i - 1], &row[i], blend_n, 2)?;
            row[i] = tile.clone();
            parts.extend(head(&tile, 2, stride)?);
        } else {
            parts.extend(head(&row[0], 2, stride + 1)?);
        }
    }
    let out = cat_parts(&parts, 2)?;
    let n = out.dim(2)?.min(sample_frames);
    out.narrow(2, 0, n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// blend along a dim follows diffusers' formula entry by entry.
    #[test]
    fn blend_matches_formula() -> Result<()> {
        let dev = Device::Cpu;
        let a = Tensor::arange(0f32, 5., &dev)?.reshape((1, 5))?;
        let b = Tensor::arange(10f32, 14., &dev)?.reshape((1, 4))?;
        let got = blend(&a, &b, 3, 1)?.flatten_all()?.to_vec1::<f32>()?;
        // y = 0: a[2]; y = 1: a[3] * 2/3 + b[1] / 3; y = 2: a[4] / 3 + b[2] * 2/3; then b[3].
        let want = [
            2.0,
            3.0 * 2.0 / 3.0 + 11.0 / 3.0,
            4.0 / 3.0 + 12.0 * 2.0 / 3.0,
            13.0,
        ];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{got:?} vs {want:?}");
        }
        // An extent larger than a tile is clipped; zero leaves b alone.
        assert_eq!(blend(&a, &b, 0, 1)?.to_vec2::<f32>()?, b.to_vec2::<f32>()?);
        assert_eq!(blend(&a, &b, 9, 1)?.dims(), &[1, 4]);
        Ok(())
    }

    /// Every call sees at most one tile (the memory bound), and since overlapping tiles of an
    /// identity map agree, blending them gives back the input exactly.
    #[test]
    fn spatial_tiles_of_identity_reassemble_the_input() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (1, 2, 3, 13, 10), &dev)?;
        let mut max_seen = (0, 0);
        let y = spatial_tiles(&x, (4, 5), (3, 3), (4, 5), (3, 3), (13, 10), &mut |t| {
            let (_, _, _, h, w) = t.dims5()?;
            max_seen = (max_seen.0.max(h), max_seen.1.max(w));
            Ok(t.clone())
        })?;
        assert!(
            max_seen.0 <= 4 && max_seen.1 <= 5,
            "a call saw {max_seen:?}"
        );
        let err = crate::model::relative_l2(&y, &x)?;
        assert!(err < 1e-6, "identity tiling: rel l2 {err}");
        Ok(())
    }

    /// A position-consistent "encoder" (frame 8j -> latent j) and "decoder" (latent j -> frames
    /// 8j - 7 ..= 8j, latent 0 -> frame 0) on position-valued inputs. Each call sees at most one
    /// tile. Encode reassembles the untiled output. Decode reproduces what diffusers 0.42.1's
    /// `_temporal_tiled_decode` gives for the same maps (checked with the reference): from 33 frames
    /// on, it is NOT the untiled output, because the reference blends the first tile's last 8
    /// frames against the second tile's first 8 one frame out of step (the first tile keeps its
    /// last frame, later tiles drop theirs), so later frames lag by one.
    #[test]
    fn temporal_tiles_match_the_reference_on_consistent_maps() -> Result<()> {
        let dev = Device::Cpu;
        let r = 8;
        let t = VaeTiling {
            temporal: true,
            ..VaeTiling::default()
        };
        let encode = |x: &Tensor| -> Result<Tensor> {
            let f = x.dim(2)?;
            let idx: Vec<u32> = (0..f).step_by(r).map(|i| i as u32).collect();
            x.contiguous()?
                .index_select(&Tensor::new(idx.as_slice(), &dev)?, 2)
        };
        let decode = |z: &Tensor| -> Result<Tensor> {
            let n = z.dim(2)?;
            let idx: Vec<u32> = (0..(n - 1) * r + 1).map(|i| i.div_ceil(r) as u32).collect();
            z.contiguous()?
                .index_select(&Tensor::new(idx.as_slice(), &dev)?, 2)
        };
        // Latent index of each output frame, from diffusers' `_temporal_tiled_decode`.
        let runs = |counts: &[usize]| -> Vec<f32> {
            let mut v = vec![0f32];
            for (j, &c) in counts.iter().enumerate() {
                v.extend(std::iter::repeat_n((j + 1) as f32, c));
            }
            v
        };
        let reference = [
            (17, runs(&[8, 8])),
            (33, runs(&[8, 9, 8, 7])),
            (41, runs(&[8, 9, 8, 8, 7])),
        ];
        for (frames, want_dec) in reference {
            let x = Tensor::arange(0f32, frames as f32, &dev)?.reshape((1, 1, frames, 1, 1))?;
            let mut longest = 0;
            let tiled = temporal_tiled_encode(&x, &t, r, &mut |tile| {
                longest = longest.max(tile.dim(2)?);
                encode(tile)
            })?;
            assert!(
                longest <= t.tile_sample_min_num_frames + 1,
                "{longest} frames"
            );
            assert_eq!(
                tiled.flatten_all()?.to_vec1::<f32>()?,
                encode(&x)?.flatten_all()?.to_vec1::<f32>()?,
                "{frames} frames, encode"
            );

            let n = (frames - 1) / r + 1;
            let z = Tensor::arange(0f32, n as f32, &dev)?.reshape((1, 1, n, 1, 1))?;
            let mut longest = 0;
            let tiled = temporal_tiled_decode(&z, &t, r, &mut |tile| {
                longest = longest.max(tile.dim(2)?);
                decode(tile)
            })?;
            assert!(
                longest <= t.tile_sample_min_num_frames / r + 1,
                "{longest} latents"
            );
            let got = tiled.flatten_all()?.to_vec1::<f32>()?;
            assert_eq!(got.len(), want_dec.len(), "{frames} frames, decode length");
            for (i, (g, w)) in got.iter().zip(&want_dec).enumerate() {
                assert!(
                    (g - w).abs() < 1e-5,
                    "{frames} frames, decode frame {i}: {g} vs {w}"
                );
            }
        }
        Ok(())
    }
}
