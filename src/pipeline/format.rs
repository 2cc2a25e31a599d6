//! Raw video frames <-> float RGB in [-1, 1] (DESIGN §2, §6).
//!
//! Frames are converted on the host into planar `f32` RGB (channel-major, `[3, H, W]`) so that a
//! whole window is uploaded to the device at once. YUV formats use the stream's matrix (BT.601,
//! BT.709, BT.2020, SMPTE 240M) and range (limited or full); chroma is upsampled by replication
//! and downsampled by averaging each subsampling block. Alpha, where the format has one, is kept
//! beside the RGB planes and resized with the frame (the model only sees RGB).

use thiserror::Error;

/// The raw formats the element accepts on its sink pad and produces on its src pad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    Rgb,
    Bgr,
    Rgba,
    Bgra,
    Argb,
    Abgr,
    Rgbx,
    Bgrx,
    Xrgb,
    Xbgr,
    I420,
    Yv12,
    Y42b,
    Y444,
    Nv12,
    Nv21,
}

impl PixelFormat {
    pub const ALL: [PixelFormat; 16] = [
        PixelFormat::Rgb,
        PixelFormat::Bgr,
        PixelFormat::Rgba,
        PixelFormat::Bgra,
        PixelFormat::Argb,
        PixelFormat::Abgr,
        PixelFormat::Rgbx,
        PixelFormat::Bgrx,
        PixelFormat::Xrgb,
        PixelFormat::Xbgr,
        PixelFormat::I420,
        PixelFormat::Yv12,
        PixelFormat::Y42b,
        PixelFormat::Y444,
        PixelFormat::Nv12,
        PixelFormat::Nv21,
    ];

    /// GStreamer's name of the format.
    pub fn name(self) -> &'static str {
        match self {
            PixelFormat::Rgb => "RGB",
            PixelFormat::Bgr => "BGR",
            PixelFormat::Rgba => "RGBA",
            PixelFormat::Bgra => "BGRA",
            PixelFormat::Argb => "ARGB",
            PixelFormat::Abgr => "ABGR",
            PixelFormat::Rgbx => "RGBx",
            PixelFormat::Bgrx => "BGRx",
            PixelFormat::Xrgb => "xRGB",
            PixelFormat::Xbgr => "xBGR",
            PixelFormat::I420 => "I420",
            PixelFormat::Yv12 => "YV12",
            PixelFormat::Y42b => "Y42B",
            PixelFormat::Y444 => "Y444",
            PixelFormat::Nv12 => "NV12",
            PixelFormat::Nv21 => "NV21",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Whether the format carries an alpha channel.
    pub fn has_alpha(self) -> bool {
        self.packed().is_some_and(|p| p.alpha.is_some())
    }

    pub(super) fn packed(self) -> Option<Packed> {
        let p = |bpp, r, g, b, alpha| Packed {
            bpp,
            r,
            g,
            b,
            alpha,
        };
        Some(match self {
            PixelFormat::Rgb => p(3, 0, 1, 2, None),
            PixelFormat::Bgr => p(3, 2, 1, 0, None),
            PixelFormat::Rgba => p(4, 0, 1, 2, Some(3)),
            PixelFormat::Bgra => p(4, 2, 1, 0, Some(3)),
            PixelFormat::Argb => p(4, 1, 2, 3, Some(0)),
            PixelFormat::Abgr => p(4, 3, 2, 1, Some(0)),
            PixelFormat::Rgbx => p(4, 0, 1, 2, None),
            PixelFormat::Bgrx => p(4, 2, 1, 0, None),
            PixelFormat::Xrgb => p(4, 1, 2, 3, None),
            PixelFormat::Xbgr => p(4, 3, 2, 1, None),
            _ => return None,
        })
    }

    pub(super) fn yuv(self) -> Option<Yuv> {
        let planar = |sx, sy, u, v| Yuv {
            sub_x: sx,
            sub_y: sy,
            chroma: Chroma::Planar { u, v },
        };
        Some(match self {
            PixelFormat::I420 => planar(2, 2, 1, 2),
            PixelFormat::Yv12 => planar(2, 2, 2, 1),
            PixelFormat::Y42b => planar(2, 1, 1, 2),
            PixelFormat::Y444 => planar(1, 1, 1, 2),
            PixelFormat::Nv12 => Yuv {
                sub_x: 2,
                sub_y: 2,
                chroma: Chroma::Interleaved { u: 0, v: 1 },
            },
            PixelFormat::Nv21 => Yuv {
                sub_x: 2,
                sub_y: 2,
                chroma: Chroma::Interleaved { u: 1, v: 0 },
            },
            _ => return None,
        })
    }

    /// Number of planes in memory.
    pub fn n_planes(self) -> usize {
        match self.yuv() {
            None => 1,
            Some(Yuv {
                chroma: Chroma::Interleaved { .. },
                ..
            }) => 2,
            Some(_) => 3,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Packed {
    pub(super) bpp: usize,
    pub(super) r: usize,
    pub(super) g: usize,
    pub(super) b: usize,
    pub(super) alpha: Option<usize>,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Chroma {
    /// U and V in planes `u` and `v`.
    Planar { u: usize, v: usize },
    /// U and V interleaved in plane 1 at byte offsets `u` and `v`.
    Interleaved { u: usize, v: usize },
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Yuv {
    pub(super) sub_x: usize,
    pub(super) sub_y: usize,
    pub(super) chroma: Chroma,
}

/// Y'CbCr matrix coefficients (Kr, Kb).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum YuvMatrix {
    #[default]
    Bt601,
    Bt709,
    Bt2020,
    Smpte240m,
}

impl YuvMatrix {
    fn kr_kb(self) -> (f32, f32) {
        match self {
            YuvMatrix::Bt601 => (0.299, 0.114),
            YuvMatrix::Bt709 => (0.2126, 0.0722),
            YuvMatrix::Bt2020 => (0.2627, 0.0593),
            YuvMatrix::Smpte240m => (0.212, 0.087),
        }
    }
}

/// Layout of one raw frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLayout {
    pub format: PixelFormat,
    pub width: usize,
    pub height: usize,
    pub matrix: YuvMatrix,
    /// Full-range (0..255) rather than limited-range (16..235 / 16..240) YUV.
    pub full_range: bool,
}

impl FrameLayout {
    pub fn new(format: PixelFormat, width: usize, height: usize) -> Self {
        Self {
            format,
            width,
            height,
            matrix: YuvMatrix::default(),
            full_range: false,
        }
    }

    /// The same layout at another size.
    pub fn with_size(self, width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            ..self
        }
    }

    /// Width and height of plane `plane` in samples.
    pub fn plane_size(&self, plane: usize) -> (usize, usize) {
        match self.format.yuv() {
            Some(y) if plane > 0 => (self.width.div_ceil(y.sub_x), self.height.div_ceil(y.sub_y)),
            _ => (self.width, self.height),
        }
    }

    /// Bytes per row of plane `plane` without padding.
    pub fn min_stride(&self, plane: usize) -> usize {
        let (w, _) = self.plane_size(plane);
        match (self.format.packed(), self.format.yuv()) {
            (Some(p), _) => w * p.bpp,
            (
                None,
                Some(Yuv {
                    chroma: Chroma::Interleaved { .. },
                    ..
                }),
            ) if plane == 1 => w * 2,
            _ => w,
        }
    }

    /// Tightly packed strides, one per plane.
    pub fn packed_strides(&self) -> Vec<usize> {
        (0..self.format.n_planes())
            .map(|p| self.min_stride(p))
            .collect()
    }

    fn check(&self, plane_lens: &[usize], strides: &[usize]) -> Result<(), FormatError> {
        if self.width == 0 || self.height == 0 {
            return Err(FormatError::EmptyFrame {
                width: self.width,
                height: self.height,
            });
        }
        let n = self.format.n_planes();
        if plane_lens.len() < n || strides.len() < n {
            return Err(FormatError::PlaneCount {
                format: self.format.name(),
                expected: n,
                got: plane_lens.len().min(strides.len()),
            });
        }
        for plane in 0..n {
            let (_, h) = self.plane_size(plane);
            let row = self.min_stride(plane);
            let needed = strides[plane] * (h - 1) + row;
            if strides[plane] < row || plane_lens[plane] < needed {
                return Err(FormatError::PlaneTooSmall {
                    plane,
                    format: self.format.name(),
                    width: self.width,
                    height: self.height,
                    stride: strides[plane],
                    len: plane_lens[plane],
                    needed,
                });
            }
        }
        Ok(())
    }
}

/// A frame that does not match its declared layout.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FormatError {
    #[error("frame size {width}x{height} is empty")]
    EmptyFrame { width: usize, height: usize },
    #[error("{format} needs {expected} planes, got {got}")]
    PlaneCount {
        format: &'static str,
        expected: usize,
        got: usize,
    },
    #[error(
        "plane {plane} of a {width}x{height} {format} frame holds {len} bytes with stride {stride}; \
         it needs at least {needed}"
    )]
    PlaneTooSmall {
        plane: usize,
        format: &'static str,
        width: usize,
        height: usize,
        stride: usize,
        len: usize,
        needed: usize,
    },
    #[error("RGB frame holds {got} values; {width}x{height} needs {expected}")]
    RgbSize {
        width: usize,
        height: usize,
        expected: usize,
        got: usize,
    },
}

/// A frame as planar float RGB in [-1, 1] (`rgb` is `[3, height, width]`, channel-major), with
/// alpha in [0, 1] (`[height, width]`) for formats that have it.
#[derive(Debug, Clone, PartialEq)]
pub struct RgbFrame {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<f32>,
    pub alpha: Option<Vec<f32>>,
}

impl RgbFrame {
    pub fn new(width: usize, height: usize, rgb: Vec<f32>, alpha: Option<Vec<f32>>) -> Self {
        Self {
            width,
            height,
            rgb,
            alpha,
        }
    }

    fn check(&self) -> Result<(), FormatError> {
        let n = self.width * self.height;
        let alpha_ok = self.alpha.as_ref().is_none_or(|a| a.len() == n);
        if self.rgb.len() != 3 * n || !alpha_ok {
            return Err(FormatError::RgbSize {
                width: self.width,
                height: self.height,
                expected: 3 * n,
                got: self.rgb.len(),
            });
        }
        Ok(())
    }
}

#[inline]
fn u8_to_unit(v: u8) -> f32 {
    v as f32 * (2.0 / 255.0) - 1.0
}

#[inline]
fn unit_to_u8(v: f32) -> u8 {
    ((v + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8
}

/// Y'CbCr <-> R'G'B' for one matrix and range, on normalized values.
#[derive(Debug, Clone, Copy)]
pub(super) struct YuvCoeffs {
    pub(super) kr: f32,
    pub(super) kb: f32,
    pub(super) y_off: f32,
    pub(super) y_scale: f32,
    pub(super) c_scale: f32,
}

impl YuvCoeffs {
    pub(super) fn new(layout: &FrameLayout) -> Self {
        let (kr, kb) = layout.matrix.kr_kb();
        let (y_off, y_scale, c_scale) = if layout.full_range {
            (0.0, 255.0, 255.0)
        } else {
            (16.0, 219.0, 224.0)
        };
        Self {
            kr,
            kb,
            y_off,
            y_scale,
            c_scale,
        }
    }

    /// 8-bit Y, U, V -> R, G, B in [0, 1] (unclamped).
    #[inline]
    fn rgb(&self, y: u8, u: u8, v: u8) -> [f32; 3] {
        let y = (y as f32 - self.y_off) / self.y_scale;
        let cb = (u as f32 - 128.0) / self.c_scale;
        let cr = (v as f32 - 128.0) / self.c_scale;
        let r = y + 2.0 * (1.0 - self.kr) * cr;
        let b = y + 2.0 * (1.0 - self.kb) * cb;
        let g = (y - self.kr * r - self.kb * b) / (1.0 - self.kr - self.kb);
        [r, g, b]
    }

    /// R, G, B in [0, 1] -> luma in [0, 1].
    #[inline]
    fn luma(&self, [r, g, b]: [f32; 3]) -> f32 {
        self.kr * r + (1.0 - self.kr - self.kb) * g + self.kb * b
    }

    #[inline]
    fn y_byte(&self, luma: f32) -> u8 {
        (self.y_off + luma * self.y_scale).round().clamp(0.0, 255.0) as u8
    }

    /// Mean R, G, B and luma of a chroma block -> 8-bit (U, V).
    #[inline]
    fn uv_bytes(&self, [r, _, b]: [f32; 3], luma: f32) -> (u8, u8) {
        let cb = (b - luma) / (2.0 * (1.0 - self.kb));
        let cr = (r - luma) / (2.0 * (1.0 - self.kr));
        let q = |c: f32| (128.0 + c * self.c_scale).round().clamp(0.0, 255.0) as u8;
        (q(cb), q(cr))
    }
}

/// Converts one raw frame into float RGB in [-1, 1].
pub fn frame_to_rgb(
    layout: &FrameLayout,
    planes: &[&[u8]],
    strides: &[usize],
) -> Result<RgbFrame, FormatError> {
    let lens: Vec<usize> = planes.iter().map(|p| p.len()).collect();
    layout.check(&lens, strides)?;
    let (w, h) = (layout.width, layout.height);
    let n = w * h;
    let mut rgb = vec![0f32; 3 * n];
    let (r_out, rest) = rgb.split_at_mut(n);
    let (g_out, b_out) = rest.split_at_mut(n);
    let mut alpha = None;
    if let Some(p) = layout.format.packed() {
        let mut a_out = p.alpha.map(|_| vec![0f32; n]);
        for y in 0..h {
            let row = &planes[0][y * strides[0]..y * strides[0] + w * p.bpp];
            for (x, px) in row.chunks_exact(p.bpp).enumerate() {
                let i = y * w + x;
                r_out[i] = u8_to_unit(px[p.r]);
                g_out[i] = u8_to_unit(px[p.g]);
                b_out[i] = u8_to_unit(px[p.b]);
                if let (Some(a), Some(a_out)) = (p.alpha, a_out.as_mut()) {
                    a_out[i] = px[a] as f32 / 255.0;
                }
            }
        }
        alpha = a_out;
    } else if let Some(yuv) = layout.format.yuv() {
        let coeffs = YuvCoeffs::new(layout);
        for y in 0..h {
            let cy = y / yuv.sub_y;
            let y_row = &planes[0][y * strides[0]..y * strides[0] + w];
            for (x, &luma) in y_row.iter().enumerate() {
                let cx = x / yuv.sub_x;
                let (u, v) = match yuv.chroma {
                    Chroma::Planar { u, v } => (
                        planes[u][cy * strides[u] + cx],
                        planes[v][cy * strides[v] + cx],
                    ),
                    Chroma::Interleaved { u, v } => {
                        let base = cy * strides[1] + 2 * cx;
                        (planes[1][base + u], planes[1][base + v])
                    }
                };
                let [r, g, b] = coeffs.rgb(luma, u, v);
                let i = y * w + x;
                r_out[i] = (r * 2.0 - 1.0).clamp(-1.0, 1.0);
                g_out[i] = (g * 2.0 - 1.0).clamp(-1.0, 1.0);
                b_out[i] = (b * 2.0 - 1.0).clamp(-1.0, 1.0);
            }
        }
    }
    Ok(RgbFrame::new(w, h, rgb, alpha))
}

/// Writes float RGB (values outside [-1, 1] are clamped) into a raw frame of `layout`, whose
/// size must equal the frame's. Formats with alpha take the frame's alpha, or opaque.
pub fn rgb_to_frame(
    frame: &RgbFrame,
    layout: &FrameLayout,
    planes: &mut [&mut [u8]],
    strides: &[usize],
) -> Result<(), FormatError> {
    frame.check()?;
    let lens: Vec<usize> = planes.iter().map(|p| p.len()).collect();
    layout.check(&lens, strides)?;
    if (frame.width, frame.height) != (layout.width, layout.height) {
        return Err(FormatError::RgbSize {
            width: layout.width,
            height: layout.height,
            expected: 3 * layout.width * layout.height,
            got: frame.rgb.len(),
        });
    }
    let (w, h) = (layout.width, layout.height);
    let n = w * h;
    let (r_in, g_in, b_in) = (&frame.rgb[..n], &frame.rgb[n..2 * n], &frame.rgb[2 * n..]);
    if let Some(p) = layout.format.packed() {
        for y in 0..h {
            let row = &mut planes[0][y * strides[0]..y * strides[0] + w * p.bpp];
            for (x, px) in row.chunks_exact_mut(p.bpp).enumerate() {
                let i = y * w + x;
                px[p.r] = unit_to_u8(r_in[i]);
                px[p.g] = unit_to_u8(g_in[i]);
                px[p.b] = unit_to_u8(b_in[i]);
                if p.bpp == 4 {
                    // The padding byte of xRGB-style formats is written too, as opaque.
                    let a_idx = p.alpha.unwrap_or(6 - p.r - p.g - p.b);
                    px[a_idx] = match (&frame.alpha, p.alpha) {
                        (Some(a), Some(_)) => (a[i] * 255.0).round().clamp(0.0, 255.0) as u8,
                        _ => 255,
                    };
                }
            }
        }
    } else if let Some(yuv) = layout.format.yuv() {
        let coeffs = YuvCoeffs::new(layout);
        let unit = |v: f32| ((v + 1.0) * 0.5).clamp(0.0, 1.0);
        for y in 0..h {
            for x in 0..w {
                let i = y * w + x;
                let rgb = [unit(r_in[i]), unit(g_in[i]), unit(b_in[i])];
                planes[0][y * strides[0] + x] = coeffs.y_byte(coeffs.luma(rgb));
            }
        }
        let (cw, ch) = layout.plane_size(1);
        for cy in 0..ch {
            for cx in 0..cw {
                // Mean over the block of pixels that share this chroma sample.
                let mut sum = [0f32; 3];
                let mut count = 0f32;
                for y in cy * yuv.sub_y..((cy + 1) * yuv.sub_y).min(h) {
                    for x in cx * yuv.sub_x..((cx + 1) * yuv.sub_x).min(w) {
                        let i = y * w + x;
                        sum[0] += unit(r_in[i]);
                        sum[1] += unit(g_in[i]);
                        sum[2] += unit(b_in[i]);
                        count += 1.0;
                    }
                }
                let mean = sum.map(|s| s / count);
                let (u, v) = coeffs.uv_bytes(mean, coeffs.luma(mean));
                match yuv.chroma {
                    Chroma::Planar { u: pu, v: pv } => {
                        planes[pu][cy * strides[pu] + cx] = u;
                        planes[pv][cy * strides[pv] + cx] = v;
                    }
                    Chroma::Interleaved { u: ou, v: ov } => {
                        let base = cy * strides[1] + 2 * cx;
                        planes[1][base + ou] = u;
                        planes[1][base + ov] = v;
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Allocates tightly packed planes for `layout`.
    fn alloc(layout: &FrameLayout) -> (Vec<Vec<u8>>, Vec<usize>) {
        let strides = layout.packed_strides();
        let planes = (0..layout.format.n_planes())
            .map(|p| vec![0u8; strides[p] * layout.plane_size(p).1])
            .collect();
        (planes, strides)
    }

    fn pattern(w: usize, h: usize) -> RgbFrame {
        let n = w * h;
        let mut rgb = vec![0f32; 3 * n];
        for c in 0..3 {
            for i in 0..n {
                // Smooth so that chroma subsampling loses little.
                let (x, y) = ((i % w) as f32, (i / w) as f32);
                rgb[c * n + i] = ((x * 0.05 + y * 0.03 + c as f32).sin() * 0.8).clamp(-1.0, 1.0);
            }
        }
        RgbFrame::new(w, h, rgb, None)
    }

    #[test]
    fn rgb_formats_round_trip_exactly() {
        for format in PixelFormat::ALL
            .into_iter()
            .filter(|f| f.packed().is_some())
        {
            let layout = FrameLayout::new(format, 7, 5);
            let (mut planes, strides) = alloc(&layout);
            let bytes: Vec<u8> = (0..planes[0].len()).map(|i| (i * 37 % 256) as u8).collect();
            planes[0].copy_from_slice(&bytes);
            let frame = frame_to_rgb(&layout, &[&planes[0]], &strides).unwrap();
            let mut out = vec![0u8; bytes.len()];
            rgb_to_frame(&frame, &layout, &mut [&mut out], &strides).unwrap();
            let p = format.packed().unwrap();
            for (i, (a, b)) in bytes.iter().zip(&out).enumerate() {
                let channel = i % p.bpp;
                let is_padding =
                    p.bpp == 4 && p.alpha.is_none() && ![p.r, p.g, p.b].contains(&channel);
                if is_padding {
                    assert_eq!(*b, 255, "{format:?} padding byte {i}");
                } else {
                    assert_eq!(a, b, "{format:?} byte {i}");
                }
            }
        }
    }

    #[test]
    fn channel_order_is_respected() {
        let layout = FrameLayout::new(PixelFormat::Bgra, 1, 1);
        let frame = frame_to_rgb(&layout, &[&[10, 20, 30, 40]], &[4]).unwrap();
        assert_eq!(
            frame.rgb,
            vec![u8_to_unit(30), u8_to_unit(20), u8_to_unit(10)]
        );
        assert_eq!(frame.alpha, Some(vec![40.0 / 255.0]));
    }

    #[test]
    fn yuv_formats_round_trip_closely_with_odd_sizes() {
        for format in PixelFormat::ALL.into_iter().filter(|f| f.yuv().is_some()) {
            for (w, h) in [(16, 8), (13, 7), (1, 1)] {
                for full_range in [false, true] {
                    let layout = FrameLayout {
                        full_range,
                        matrix: YuvMatrix::Bt709,
                        ..FrameLayout::new(format, w, h)
                    };
                    let src = pattern(w, h);
                    let (mut planes, strides) = alloc(&layout);
                    let mut refs: Vec<&mut [u8]> =
                        planes.iter_mut().map(|p| p.as_mut_slice()).collect();
                    rgb_to_frame(&src, &layout, &mut refs, &strides).unwrap();
                    let refs: Vec<&[u8]> = planes.iter().map(|p| p.as_slice()).collect();
                    let back = frame_to_rgb(&layout, &refs, &strides).unwrap();
                    let mae: f32 = src
                        .rgb
                        .iter()
                        .zip(&back.rgb)
                        .map(|(a, b)| (a - b).abs())
                        .sum::<f32>()
                        / src.rgb.len() as f32;
                    assert!(
                        mae < 0.03,
                        "{format:?} {w}x{h} full={full_range}: mae {mae}"
                    );
                }
            }
        }
    }

    #[test]
    fn bt601_limited_red_matches_the_standard() {
        // Pure red in BT.601 limited range is Y=81, Cb=90, Cr=240.
        let layout = FrameLayout::new(PixelFormat::I420, 2, 2);
        let red = RgbFrame::new(
            2,
            2,
            [vec![1.0; 4], vec![-1.0; 4], vec![-1.0; 4]].concat(),
            None,
        );
        let (mut planes, strides) = alloc(&layout);
        let mut refs: Vec<&mut [u8]> = planes.iter_mut().map(|p| p.as_mut_slice()).collect();
        rgb_to_frame(&red, &layout, &mut refs, &strides).unwrap();
        assert_eq!(planes[0], vec![81; 4]);
        assert_eq!(planes[1], vec![90]);
        assert_eq!(planes[2], vec![240]);
    }

    #[test]
    fn strided_planes_are_read_and_written_by_stride() {
        let layout = FrameLayout::new(PixelFormat::Rgb, 2, 2);
        // Stride 8: two padding bytes per row that must be left alone.
        let src = [1, 2, 3, 4, 5, 6, 99, 99, 7, 8, 9, 10, 11, 12, 99, 99];
        let frame = frame_to_rgb(&layout, &[&src[..14]], &[8]).unwrap();
        let mut out = [0u8; 16];
        rgb_to_frame(&frame, &layout, &mut [&mut out[..]], &[8]).unwrap();
        assert_eq!(&out[..6], &src[..6]);
        assert_eq!(&out[8..14], &src[8..14]);
        assert_eq!(&out[6..8], &[0, 0]);
    }

    #[test]
    fn short_planes_are_errors_not_panics() {
        let layout = FrameLayout::new(PixelFormat::I420, 4, 4);
        let err = frame_to_rgb(&layout, &[&[0; 16], &[0; 4], &[0; 3]], &[4, 2, 2]).unwrap_err();
        assert!(err.to_string().contains("plane 2"), "{err}");
        let err = frame_to_rgb(&layout, &[&[0; 16]], &[4]).unwrap_err();
        assert!(matches!(err, FormatError::PlaneCount { .. }), "{err}");
    }
}
