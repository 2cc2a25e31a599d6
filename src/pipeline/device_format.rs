//! Float RGB -> raw frame bytes on the model's device (issue 8: no per-frame round trip through
//! host memory in float).
//!
//! [`rgb_to_planes`] computes, for a window of output frames still on the device, the bytes of
//! every plane of the output format with tensor ops that run on any candle device. Only those
//! bytes are downloaded: 1.5 bytes per pixel for I420 or NV12, 3 or 4 for packed RGB, against 12
//! for float RGB. The host then only copies rows into the output buffers ([`copy_planes`]).
//!
//! The arithmetic is [`super::format::rgb_to_frame`]'s, operation for operation in f32 (the same
//! sums in the same order, true divisions where the host divides). So the bytes are the host's
//! bytes, which the tests check on every format without alpha. Formats with alpha are left to
//! the host path: their alpha is resized beside the model, on the host.

use candle_core::{DType, Result, Tensor};

use super::format::{Chroma, FrameLayout, YuvCoeffs};

/// Whether [`rgb_to_planes`] handles `layout` (every format without an alpha channel).
pub fn converts_on_device(layout: &FrameLayout) -> bool {
    !layout.format.has_alpha()
}

/// `rgb` (3, e, h, w) in [-1, 1] (values outside are clamped), any float dtype, on any device ->
/// one u8 tensor per plane of `layout`, (e, rows, row bytes), tightly packed, on the same device.
/// `None` for formats with alpha ([`converts_on_device`]).
pub fn rgb_to_planes(rgb: &Tensor, layout: &FrameLayout) -> Result<Option<Vec<Tensor>>> {
    if !converts_on_device(layout) {
        return Ok(None);
    }
    let (c, e, h, w) = rgb.dims4()?;
    if c != 3 || (h, w) != (layout.height, layout.width) {
        candle_core::bail!(
            "device conversion: rgb is {:?}, the {} layout wants [3, _, {}, {}]",
            rgb.dims(),
            layout.format.name(),
            layout.height,
            layout.width
        );
    }
    let rgb = rgb.to_dtype(DType::F32)?;
    if let Some(p) = layout.format.packed() {
        // unit_to_u8: ((v + 1) * 127.5).round().clamp(0, 255)
        let bytes = ((&rgb + 1.0)? * 127.5)?.round()?.clamp(0f32, 255f32)?;
        let channel = |i: usize| bytes.get(i);
        let opaque = Tensor::full(255f32, (e, h, w), rgb.device())?;
        let mut order = Vec::with_capacity(p.bpp);
        for byte in 0..p.bpp {
            order.push(if byte == p.r {
                channel(0)?
            } else if byte == p.g {
                channel(1)?
            } else if byte == p.b {
                channel(2)?
            } else {
                // the padding byte of xRGB-style formats, written opaque as the host does
                opaque.clone()
            });
        }
        let packed = Tensor::stack(&order, 3)?.reshape((e, h, w * p.bpp))?;
        return Ok(Some(vec![packed.to_dtype(DType::U8)?]));
    }
    let Some(yuv) = layout.format.yuv() else {
        candle_core::bail!(
            "device conversion: {} is neither RGB nor YUV",
            layout.format.name()
        );
    };
    let k = YuvCoeffs::new(layout);
    // unit: ((v + 1) * 0.5).clamp(0, 1)
    let unit = ((&rgb + 1.0)? * 0.5)?.clamp(0f32, 1f32)?;
    let (r, g, b) = (unit.get(0)?, unit.get(1)?, unit.get(2)?);
    let luma = |r: &Tensor, g: &Tensor, b: &Tensor| -> Result<Tensor> {
        let kg = 1.0 - k.kr - k.kb;
        ((r * k.kr as f64)? + (g * kg as f64)?)? + (b * k.kb as f64)?
    };
    let quantize =
        |t: Tensor| -> Result<Tensor> { t.round()?.clamp(0f32, 255f32)?.to_dtype(DType::U8) };
    // y_byte: (y_off + luma * y_scale).round().clamp(0, 255)
    let y_plane = quantize(((luma(&r, &g, &b)? * k.y_scale as f64)? + k.y_off as f64)?)?;

    // The mean of each chroma block over the pixels inside the frame: blocks are zero-padded at
    // odd edges (adding zero is exact) and the sum, taken row by row as the host does, is
    // divided by the count of real pixels.
    let (cw, ch) = layout.plane_size(1);
    let (sx, sy) = (yuv.sub_x, yuv.sub_y);
    let block_mean = |x: &Tensor| -> Result<Tensor> {
        if (sx, sy) == (1, 1) {
            return Ok(x.clone());
        }
        let x = x
            .pad_with_zeros(1, 0, ch * sy - h)?
            .pad_with_zeros(2, 0, cw * sx - w)?
            .reshape((e, ch, sy, cw, sx))?;
        let mut sum: Option<Tensor> = None;
        for dy in 0..sy {
            for dx in 0..sx {
                let tap = x.narrow(2, dy, 1)?.narrow(4, dx, 1)?.reshape((e, ch, cw))?;
                sum = Some(match sum {
                    None => tap,
                    Some(s) => (s + tap)?,
                });
            }
        }
        let sum = sum.expect("at least one tap");
        sum.broadcast_div(&block_counts(h, w, sx, sy, x.device())?)
    };
    let (mr, mg, mb) = (block_mean(&r)?, block_mean(&g)?, block_mean(&b)?);
    let mean_luma = luma(&mr, &mg, &mb)?;
    // uv_bytes: cb = (b - luma) / (2 (1 - kb)), cr = (r - luma) / (2 (1 - kr)), then
    // (128 + c * c_scale).round().clamp(0, 255); true divisions, as on the host.
    let divide =
        |t: Tensor, by: f32| -> Result<Tensor> { t.broadcast_div(&Tensor::new(by, t.device())?) };
    let cb = divide((&mb - &mean_luma)?, 2.0 * (1.0 - k.kb))?;
    let cr = divide((&mr - &mean_luma)?, 2.0 * (1.0 - k.kr))?;
    let u = quantize(((cb * k.c_scale as f64)? + 128.0)?)?;
    let v = quantize(((cr * k.c_scale as f64)? + 128.0)?)?;
    Ok(Some(match yuv.chroma {
        Chroma::Planar { u: pu, v: pv } => {
            // plane 0 is luma; the chroma planes in the format's order (I420: U V, YV12: V U)
            let mut planes = vec![y_plane, u.clone(), v.clone()];
            planes[pu] = u;
            planes[pv] = v;
            planes
        }
        Chroma::Interleaved { u: ou, v: ov } => {
            let mut pair = [u.clone(), v.clone()];
            pair[ou] = u;
            pair[ov] = v;
            let uv = Tensor::stack(&pair, 3)?.reshape((e, ch, cw * 2))?;
            vec![y_plane, uv]
        }
    }))
}

/// Pixels inside an `h` x `w` frame per chroma block of `sx` x `sy`: (rows, cols) of f32.
fn block_counts(
    h: usize,
    w: usize,
    sx: usize,
    sy: usize,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let (cw, ch) = (w.div_ceil(sx), h.div_ceil(sy));
    let mut counts = Vec::with_capacity(ch * cw);
    for cy in 0..ch {
        let rows = ((cy + 1) * sy).min(h) - cy * sy;
        for cx in 0..cw {
            let cols = ((cx + 1) * sx).min(w) - cx * sx;
            counts.push((rows * cols) as f32);
        }
    }
    Tensor::from_vec(counts, (ch, cw), device)
}

/// The planes of [`rgb_to_planes`], downloaded: for each frame, one tightly packed byte vector
/// per plane.
pub fn download_planes(planes: &[Tensor]) -> Result<Vec<Vec<Vec<u8>>>> {
    let frames = planes.first().map_or(Ok(0), |p| p.dim(0))?;
    let mut out: Vec<Vec<Vec<u8>>> = (0..frames)
        .map(|_| Vec::with_capacity(planes.len()))
        .collect();
    for plane in planes {
        let bytes = plane
            .to_device(&candle_core::Device::Cpu)?
            .flatten_all()?
            .to_vec1::<u8>()?;
        let per_frame = bytes.len() / frames.max(1);
        for (frame, chunk) in out.iter_mut().zip(bytes.chunks_exact(per_frame.max(1))) {
            frame.push(chunk.to_vec());
        }
    }
    Ok(out)
}

/// Copies tightly packed `planes` of `layout` into `dst` planes with `strides` (the output
/// buffer's), row by row. The sizes are checked: a mismatch is an error naming the plane.
pub fn copy_planes(
    layout: &FrameLayout,
    planes: &[Vec<u8>],
    dst: &mut [&mut [u8]],
    strides: &[usize],
) -> std::result::Result<(), String> {
    let n = layout.format.n_planes();
    if planes.len() != n || dst.len() < n || strides.len() < n {
        return Err(format!(
            "{}: {} planes converted on the device, {} in the buffer, {n} in the format",
            layout.format.name(),
            planes.len(),
            dst.len()
        ));
    }
    for p in 0..n {
        let row = layout.min_stride(p);
        let rows = layout.plane_size(p).1;
        let needed = strides[p] * (rows - 1) + row;
        if planes[p].len() != row * rows || strides[p] < row || dst[p].len() < needed {
            return Err(format!(
                "{} plane {p}: {} bytes converted, {rows} rows of {row} expected, into {} bytes \
                 with stride {}",
                layout.format.name(),
                planes[p].len(),
                dst[p].len(),
                strides[p]
            ));
        }
        for (y, src) in planes[p].chunks_exact(row).enumerate() {
            dst[p][y * strides[p]..y * strides[p] + row].copy_from_slice(src);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::format::{rgb_to_frame, PixelFormat, RgbFrame, YuvMatrix};
    use candle_core::Device;

    /// A window of `e` frames with smooth content, out-of-range values and exact ties.
    fn window(e: usize, h: usize, w: usize) -> Tensor {
        let n = 3 * e * h * w;
        let v: Vec<f32> = (0..n)
            .map(|i| {
                let x = i as f32;
                match i % 97 {
                    0 => 1.5,               // clamped high
                    1 => -1.25,             // clamped low
                    2 => 0.5 / 127.5 - 1.0, // a rounding tie for packed RGB
                    _ => (x * 0.013).sin() * 0.9 + (x * 0.0007).cos() * 0.1,
                }
            })
            .collect();
        Tensor::from_vec(v, (3, e, h, w), &Device::Cpu).unwrap()
    }

    /// The host conversion of frame `f` of `rgb` into tightly packed planes.
    fn host_planes(rgb: &Tensor, f: usize, layout: &FrameLayout) -> Vec<Vec<u8>> {
        let frame = rgb.narrow(1, f, 1).unwrap().squeeze(1).unwrap();
        let frame = RgbFrame::new(
            layout.width,
            layout.height,
            frame.flatten_all().unwrap().to_vec1().unwrap(),
            None,
        );
        let strides = layout.packed_strides();
        let mut planes: Vec<Vec<u8>> = (0..layout.format.n_planes())
            .map(|p| vec![0u8; strides[p] * layout.plane_size(p).1])
            .collect();
        let mut refs: Vec<&mut [u8]> = planes.iter_mut().map(|p| p.as_mut_slice()).collect();
        rgb_to_frame(&frame, layout, &mut refs, &strides).unwrap();
        planes
    }

    #[test]
    fn device_bytes_equal_the_host_conversion_for_every_format_without_alpha() {
        let formats: Vec<PixelFormat> = PixelFormat::ALL
            .into_iter()
            .filter(|f| !f.has_alpha())
            .collect();
        assert_eq!(formats.len(), 12, "{formats:?}");
        for (h, w) in [(6, 8), (5, 7), (1, 1), (3, 2)] {
            let rgb = window(2, h, w);
            for &format in &formats {
                for (matrix, full_range) in [
                    (YuvMatrix::Bt601, false),
                    (YuvMatrix::Bt709, true),
                    (YuvMatrix::Bt2020, false),
                ] {
                    let layout = FrameLayout {
                        matrix,
                        full_range,
                        ..FrameLayout::new(format, w, h)
                    };
                    let planes = rgb_to_planes(&rgb, &layout).unwrap().unwrap();
                    let frames = download_planes(&planes).unwrap();
                    assert_eq!(frames.len(), 2);
                    for (f, got) in frames.iter().enumerate() {
                        let want = host_planes(&rgb, f, &layout);
                        assert_eq!(
                            got, &want,
                            "{format:?} {w}x{h} {matrix:?} full {full_range} frame {f}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn formats_with_alpha_stay_on_the_host() {
        let rgb = window(1, 2, 2);
        for format in PixelFormat::ALL.into_iter().filter(|f| f.has_alpha()) {
            let layout = FrameLayout::new(format, 2, 2);
            assert!(!converts_on_device(&layout));
            assert!(
                rgb_to_planes(&rgb, &layout).unwrap().is_none(),
                "{format:?}"
            );
        }
    }

    #[test]
    fn planes_are_copied_into_strided_buffers_and_bad_sizes_are_errors() {
        let layout = FrameLayout::new(PixelFormat::I420, 5, 3);
        let rgb = window(1, 3, 5);
        let planes = &download_planes(&rgb_to_planes(&rgb, &layout).unwrap().unwrap()).unwrap()[0];
        // strides padded to 8 bytes, as GStreamer's video frames are
        let strides = [8, 8, 8];
        let mut bufs = [vec![0u8; 8 * 3], vec![0u8; 8 * 2], vec![0u8; 8 * 2]];
        let mut dst: Vec<&mut [u8]> = bufs.iter_mut().map(|b| b.as_mut_slice()).collect();
        copy_planes(&layout, planes, &mut dst, &strides).unwrap();
        for y in 0..3 {
            assert_eq!(&bufs[0][y * 8..y * 8 + 5], &planes[0][y * 5..y * 5 + 5]);
            assert_eq!(
                &bufs[0][y * 8 + 5..y * 8 + 8],
                &[0, 0, 0],
                "padding untouched"
            );
        }
        assert_eq!(&bufs[2][8..11], &planes[2][3..6]);
        let mut small = [vec![0u8; 8], vec![0u8; 16], vec![0u8; 16]];
        let mut dst: Vec<&mut [u8]> = small.iter_mut().map(|b| b.as_mut_slice()).collect();
        let e = copy_planes(&layout, planes, &mut dst, &strides).unwrap_err();
        assert!(e.contains("I420 plane 0"), "{e}");
    }
}
