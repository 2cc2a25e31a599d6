//! Float RGB image buffer and the pixel operations the degradations and the image set share:
//! resizing (area, bilinear, bicubic as PyTorch's `F.interpolate` computes them, which is what the
//! Real-ESRGAN pipeline calls), 2-D filtering with reflect padding (its `filter2D`), and the 8-bit
//! round trip.

use image::RgbImage;

/// An RGB image, interleaved `[y][x][c]`, f32, nominally in [0, 1] (noise may push it outside
/// until the next clamp, as in Real-ESRGAN).
#[derive(Clone, Debug, PartialEq)]
pub struct Img {
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
}

impl Img {
    pub fn new(width: usize, height: usize) -> Img {
        Img {
            width,
            height,
            data: vec![0.0; width * height * 3],
        }
    }

    pub fn from_rgb8(img: &RgbImage) -> Img {
        Img {
            width: img.width() as usize,
            height: img.height() as usize,
            data: img.as_raw().iter().map(|&v| v as f32 / 255.0).collect(),
        }
    }

    /// Clamped to [0, 1] and rounded to 8 bits.
    pub fn to_rgb8(&self) -> RgbImage {
        let raw = self.data.iter().map(|&v| to_u8(v)).collect();
        RgbImage::from_raw(self.width as u32, self.height as u32, raw)
            .expect("buffer length is width * height * 3")
    }

    /// `clamp((x * 255).round(), 0, 255) / 255`, the quantisation Real-ESRGAN ends its pipeline
    /// with (and what an 8-bit PNG of the frame holds).
    pub fn quantize(&mut self) {
        for v in &mut self.data {
            *v = to_u8(*v) as f32 / 255.0;
        }
    }

    pub fn clamp01(&mut self) {
        for v in &mut self.data {
            *v = v.clamp(0.0, 1.0);
        }
    }
}

pub fn to_u8(v: f32) -> u8 {
    (v * 255.0).round().clamp(0.0, 255.0) as u8
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ResizeMode {
    /// Average over the covered input area (PyTorch `area`, i.e. adaptive average pooling,
    /// generalised to fractional ratios by weighting each input pixel with its overlap).
    Area,
    /// PyTorch `bilinear`, `align_corners=False`, no antialiasing.
    Bilinear,
    /// PyTorch `bicubic` (a = -0.75), `align_corners=False`, no antialiasing.
    Bicubic,
}

impl ResizeMode {
    pub const ALL: [ResizeMode; 3] = [ResizeMode::Area, ResizeMode::Bilinear, ResizeMode::Bicubic];
}

/// Taps of one output sample along one axis: (first input index, weights).
struct Taps {
    start: Vec<usize>,
    len: usize,
    weights: Vec<f32>,
}

fn cubic(x: f32) -> f32 {
    // Keys' cubic convolution with a = -0.75 (PyTorch's upsample_bicubic2d)
    const A: f32 = -0.75;
    let x = x.abs();
    if x <= 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A
    } else {
        0.0
    }
}

fn taps(input: usize, output: usize, mode: ResizeMode) -> Taps {
    let scale = input as f64 / output as f64;
    match mode {
        ResizeMode::Area => {
            // output pixel i covers [i * scale, (i + 1) * scale) of the input
            let len = scale.ceil() as usize + 1;
            let mut start = Vec::with_capacity(output);
            let mut weights = vec![0.0f32; output * len];
            for i in 0..output {
                let lo = i as f64 * scale;
                let hi = ((i + 1) as f64 * scale).min(input as f64);
                let first = (lo.floor() as usize).min(input - 1);
                start.push(first);
                for k in 0..len {
                    let j = first + k;
                    if j >= input {
                        break;
                    }
                    let overlap = (hi.min((j + 1) as f64) - lo.max(j as f64)).max(0.0);
                    weights[i * len + k] = (overlap / (hi - lo)) as f32;
                }
            }
            Taps {
                start,
                len,
                weights,
            }
        }
        ResizeMode::Bilinear | ResizeMode::Bicubic => {
            let cubic_mode = mode == ResizeMode::Bicubic;
            let len = if cubic_mode { 4 } else { 2 };
            // clamped border taps are folded into the edge pixel, so `start` may be shifted and
            // the window always fits inside the input
            let win = len.min(input);
            let mut start = Vec::with_capacity(output);
            let mut weights = vec![0.0f32; output * win];
            for i in 0..output {
                let mut src = (i as f64 + 0.5) * scale - 0.5;
                if !cubic_mode && src < 0.0 {
                    src = 0.0; // PyTorch clamps the linear source index at 0
                }
                let fl = src.floor();
                let t = (src - fl) as f32;
                let fl = fl as i64;
                let first = (fl - if cubic_mode { 1 } else { 0 })
                    .clamp(0, input as i64 - win as i64) as usize;
                start.push(first);
                for k in 0..len {
                    let (idx, w) = if cubic_mode {
                        (fl - 1 + k as i64, cubic(t + 1.0 - k as f32))
                    } else {
                        (fl + k as i64, if k == 0 { 1.0 - t } else { t })
                    };
                    let j = idx.clamp(0, input as i64 - 1) as usize;
                    weights[i * win + (j - first)] += w;
                }
            }
            Taps {
                start,
                len: win,
                weights,
            }
        }
    }
}

/// Resize to exactly `out_w` x `out_h` (both at least 1), separably: rows, then columns.
pub fn resize(img: &Img, out_w: usize, out_h: usize, mode: ResizeMode) -> Img {
    assert!(out_w > 0 && out_h > 0 && img.width > 0 && img.height > 0);
    if out_w == img.width && out_h == img.height {
        return img.clone();
    }
    resize_from(&img.data, img.width, img.height, out_w, out_h, mode, |v| v)
}

/// [`resize`] straight from an 8-bit image (values / 255), without a full-size f32 copy: a 5K
/// wallpaper is 177 MB as f32, its horizontally resized intermediate a fraction of that.
pub fn resize_rgb8(img: &RgbImage, out_w: usize, out_h: usize, mode: ResizeMode) -> Img {
    let (w, h) = (img.width() as usize, img.height() as usize);
    assert!(out_w > 0 && out_h > 0 && w > 0 && h > 0);
    resize_from(img.as_raw(), w, h, out_w, out_h, mode, |v| v as f32 / 255.0)
}

fn resize_from<T: Copy>(
    data: &[T],
    width: usize,
    height: usize,
    out_w: usize,
    out_h: usize,
    mode: ResizeMode,
    value: impl Fn(T) -> f32,
) -> Img {
    let tx = taps(width, out_w, mode);
    let ty = taps(height, out_h, mode);
    // horizontal pass: [height][out_w][3]
    let mut mid = vec![0.0f32; height * out_w * 3];
    for y in 0..height {
        let row = &data[y * width * 3..(y + 1) * width * 3];
        let out = &mut mid[y * out_w * 3..(y + 1) * out_w * 3];
        for x in 0..out_w {
            let s = tx.start[x];
            let w = &tx.weights[x * tx.len..(x + 1) * tx.len];
            let mut acc = [0.0f32; 3];
            for (k, &wk) in w.iter().enumerate() {
                let j = s + k;
                if j >= width {
                    break;
                }
                let p = &row[j * 3..j * 3 + 3];
                acc[0] += wk * value(p[0]);
                acc[1] += wk * value(p[1]);
                acc[2] += wk * value(p[2]);
            }
            out[x * 3..x * 3 + 3].copy_from_slice(&acc);
        }
    }
    // vertical pass
    let mut out = Img::new(out_w, out_h);
    let stride = out_w * 3;
    for y in 0..out_h {
        let s = ty.start[y];
        let w = &ty.weights[y * ty.len..(y + 1) * ty.len];
        let dst = &mut out.data[y * stride..(y + 1) * stride];
        for (k, &wk) in w.iter().enumerate() {
            let j = s + k;
            if j >= height || wk == 0.0 {
                continue;
            }
            let src = &mid[j * stride..(j + 1) * stride];
            for (d, &v) in dst.iter_mut().zip(src) {
                *d += wk * v;
            }
        }
    }
    out
}

/// Reflect an index into [0, n) the way `F.pad(mode="reflect")` does (edge not repeated).
fn reflect(i: i64, n: usize) -> usize {
    let n = n as i64;
    if n == 1 {
        return 0;
    }
    let period = 2 * (n - 1);
    let mut m = i.rem_euclid(period);
    if m >= n {
        m = period - m;
    }
    m as usize
}

/// A square, odd-sized 2-D kernel (row-major `[ky][kx]`).
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    pub size: usize,
    pub weights: Vec<f32>,
}

impl Kernel {
    /// `(column, row)` with `k[y][x] = column[y] * row[x]` when the kernel is separable (every
    /// isotropic Gaussian, the most common kernel of Real-ESRGAN), else `None`.
    fn factors(&self) -> Option<(Vec<f32>, Vec<f32>)> {
        let n = self.size;
        let c = n / 2;
        let center = self.weights[c * n + c];
        let peak = self.weights.iter().fold(0.0f32, |m, w| m.max(w.abs()));
        if center <= 0.0 || center < 0.5 * peak {
            return None;
        }
        let column: Vec<f32> = (0..n).map(|y| self.weights[y * n + c]).collect();
        let row: Vec<f32> = (0..n).map(|x| self.weights[c * n + x] / center).collect();
        for (krow, &cy) in self.weights.chunks_exact(n).zip(&column) {
            for (&k, &rx) in krow.iter().zip(&row) {
                if (k - cy * rx).abs() > 1e-6 * peak {
                    return None;
                }
            }
        }
        Some((column, row))
    }

    /// The centred sub-square outside which every row and column carries less than `tol` of the
    /// total absolute weight; Real-ESRGAN pads all kernels to 21 x 21, and a small sigma leaves
    /// most of that square at ~0, so convolving with the trimmed support is the same filter up to
    /// far below 8-bit precision and several times faster.
    fn trimmed(&self, tol: f32) -> Kernel {
        let n = self.size;
        let total: f32 = self.weights.iter().map(|w| w.abs()).sum();
        let mut r = n / 2;
        while r > 0 {
            let lo = n / 2 - r;
            let hi = n / 2 + r;
            let mut ring = 0.0f32;
            for i in lo..=hi {
                ring += self.weights[lo * n + i].abs()
                    + self.weights[hi * n + i].abs()
                    + self.weights[i * n + lo].abs()
                    + self.weights[i * n + hi].abs();
            }
            if ring > tol * total {
                break;
            }
            r -= 1;
        }
        let m = 2 * r + 1;
        let off = n / 2 - r;
        let mut weights = Vec::with_capacity(m * m);
        for y in 0..m {
            for x in 0..m {
                weights.push(self.weights[(y + off) * n + x + off]);
            }
        }
        Kernel { size: m, weights }
    }
}

/// Correlate every channel with `kernel` (`filter2D` of Real-ESRGAN: reflect padding, same size).
pub fn filter2d(img: &Img, kernel: &Kernel) -> Img {
    let k = kernel.trimmed(1e-6);
    let r = k.size / 2;
    let (w, h) = (img.width, img.height);
    // reflect-padded copy, so that every tap is a contiguous row slice (the inner loop is then a
    // plain multiply-add over w * 3 floats, which the compiler vectorises)
    let (pw, ph) = (w + 2 * r, h + 2 * r);
    let mut padded = vec![0.0f32; pw * ph * 3];
    for py in 0..ph {
        let sy = reflect(py as i64 - r as i64, h);
        let src = &img.data[sy * w * 3..(sy + 1) * w * 3];
        let dst = &mut padded[py * pw * 3..(py + 1) * pw * 3];
        dst[r * 3..(r + w) * 3].copy_from_slice(src);
        for px in (0..r).chain(r + w..pw) {
            let sx = reflect(px as i64 - r as i64, w);
            dst[px * 3..px * 3 + 3].copy_from_slice(&src[sx * 3..sx * 3 + 3]);
        }
    }
    let mut out = Img::new(w, h);
    if let Some((column, row)) = k.factors() {
        // separable: a horizontal pass over the padded rows, then a vertical one
        let mut mid = vec![0.0f32; ph * w * 3];
        for py in 0..ph {
            let src = &padded[py * pw * 3..(py + 1) * pw * 3];
            let dst = &mut mid[py * w * 3..(py + 1) * w * 3];
            for (kx, &kw) in row.iter().enumerate() {
                for (d, &s) in dst.iter_mut().zip(&src[kx * 3..(kx + w) * 3]) {
                    *d += kw * s;
                }
            }
        }
        for y in 0..h {
            let dst = &mut out.data[y * w * 3..(y + 1) * w * 3];
            for (ky, &kw) in column.iter().enumerate() {
                for (d, &s) in dst
                    .iter_mut()
                    .zip(&mid[(y + ky) * w * 3..(y + ky + 1) * w * 3])
                {
                    *d += kw * s;
                }
            }
        }
        return out;
    }
    for y in 0..h {
        let dst = &mut out.data[y * w * 3..(y + 1) * w * 3];
        for ky in 0..k.size {
            let row = &padded[(y + ky) * pw * 3..(y + ky + 1) * pw * 3];
            for kx in 0..k.size {
                let kw = k.weights[ky * k.size + kx];
                if kw == 0.0 {
                    continue;
                }
                let src = &row[kx * 3..(kx + w) * 3];
                for (d, &s) in dst.iter_mut().zip(src) {
                    *d += kw * s;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(w: usize, h: usize) -> Img {
        let mut img = Img::new(w, h);
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    img.data[(y * w + x) * 3 + c] = ((x * 7 + y * 3 + c * 11) % 97) as f32 / 96.0;
                }
            }
        }
        img
    }

    #[test]
    fn resize_gives_the_exact_size_and_keeps_flat_images_flat() {
        let mut flat = Img::new(37, 23);
        flat.data.iter_mut().for_each(|v| *v = 0.4);
        for mode in ResizeMode::ALL {
            for (w, h) in [(9, 5), (37, 23), (80, 51), (1, 1), (13, 40)] {
                let out = resize(&flat, w, h, mode);
                assert_eq!((out.width, out.height, out.data.len()), (w, h, w * h * 3));
                for v in &out.data {
                    assert!((v - 0.4).abs() < 1e-5, "{mode:?} {w}x{h}: {v}");
                }
            }
        }
    }

    #[test]
    fn area_downscale_by_an_integer_factor_is_the_block_mean() {
        let img = ramp(8, 4);
        let out = resize(&img, 4, 2, ResizeMode::Area);
        for y in 0..2 {
            for x in 0..4 {
                for c in 0..3 {
                    let mut s = 0.0;
                    for dy in 0..2 {
                        for dx in 0..2 {
                            s += img.data[((2 * y + dy) * 8 + 2 * x + dx) * 3 + c];
                        }
                    }
                    let got = out.data[(y * 4 + x) * 3 + c];
                    assert!((got - s / 4.0).abs() < 1e-6);
                }
            }
        }
    }

    #[test]
    fn resizing_from_rgb8_equals_resizing_its_float_copy() {
        let rgb = RgbImage::from_fn(41, 29, |x, y| {
            image::Rgb([(x * 6) as u8, (y * 8) as u8, 200])
        });
        for mode in ResizeMode::ALL {
            assert_eq!(
                resize_rgb8(&rgb, 13, 10, mode),
                resize(&Img::from_rgb8(&rgb), 13, 10, mode)
            );
        }
    }

    #[test]
    fn bilinear_halving_averages_pixel_pairs() {
        // align_corners=False at ratio 2 samples exactly between two input pixels
        let img = ramp(8, 1);
        let out = resize(&img, 4, 1, ResizeMode::Bilinear);
        for x in 0..4 {
            let want = (img.data[(2 * x) * 3] + img.data[(2 * x + 1) * 3]) / 2.0;
            assert!((out.data[x * 3] - want).abs() < 1e-6);
        }
    }

    #[test]
    fn filter_matches_a_direct_reflect_padded_correlation() {
        let img = ramp(9, 6);
        let n = 5;
        let weights: Vec<f32> = (0..n * n)
            .map(|i| ((i * 13) % 7) as f32 / 10.0 + 0.01)
            .collect();
        let k = Kernel { size: n, weights };
        let out = filter2d(&img, &k);
        for y in 0..6i64 {
            for x in 0..9i64 {
                for c in 0..3 {
                    let mut want = 0.0f32;
                    for ky in 0..n as i64 {
                        for kx in 0..n as i64 {
                            let sy = reflect(y + ky - 2, 6);
                            let sx = reflect(x + kx - 2, 9);
                            want += k.weights[(ky * n as i64 + kx) as usize]
                                * img.data[(sy * 9 + sx) * 3 + c];
                        }
                    }
                    let got = out.data[((y * 9 + x) * 3) as usize + c];
                    assert!((got - want).abs() < 1e-5, "{x},{y},{c}: {got} vs {want}");
                }
            }
        }
    }

    #[test]
    fn separable_kernels_take_the_fast_path_with_the_same_result() {
        let img = ramp(12, 10);
        let g: Vec<f32> = [0.1f32, 0.2, 0.4, 0.2, 0.1].to_vec();
        let weights: Vec<f32> = (0..25).map(|i| g[i / 5] * g[i % 5]).collect();
        let sep = Kernel { size: 5, weights };
        assert!(sep.factors().is_some());
        let mut skew = sep.clone();
        skew.weights[3] += 0.05;
        assert!(skew.factors().is_none());
        // against a direct reflect-padded correlation
        let fast = filter2d(&img, &sep);
        let mut slow = Img::new(12, 10);
        for y in 0..10i64 {
            for x in 0..12i64 {
                for c in 0..3 {
                    let mut acc = 0.0;
                    for ky in 0..5i64 {
                        for kx in 0..5i64 {
                            acc += sep.weights[(ky * 5 + kx) as usize]
                                * img.data[(reflect(y + ky - 2, 10) * 12
                                    + reflect(x + kx - 2, 12))
                                    * 3
                                    + c];
                        }
                    }
                    slow.data[((y * 12 + x) * 3) as usize + c] = acc;
                }
            }
        }
        for (a, b) in fast.data.iter().zip(&slow.data) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    #[test]
    fn identity_kernel_filter_is_identity_and_reflect_is_symmetric() {
        let img = ramp(11, 7);
        let mut weights = vec![0.0; 25];
        weights[12] = 1.0;
        let out = filter2d(&img, &Kernel { size: 5, weights });
        assert_eq!(out, img);
        assert_eq!(reflect(-1, 5), 1);
        assert_eq!(reflect(5, 5), 3);
        assert_eq!(reflect(-7, 5), 1);
    }
}
