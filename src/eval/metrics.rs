//! Image quality metrics for super-resolution, computed as SR papers do: on luma Y (BT.601,
//! MATLAB's `rgb2ycbcr`) with a `scale`-pixel border cropped, plus PSNR on RGB.
//!
//! Images are [`Image`]s: planar RGB f32 in [0, 1], `[3, height, width]`.

use anyhow::{bail, ensure};

/// A planar RGB image, values in [0, 1], `data` is `[3, height, width]` channel-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
}

impl Image {
    pub fn new(width: usize, height: usize, data: Vec<f32>) -> anyhow::Result<Self> {
        ensure!(
            data.len() == 3 * width * height,
            "an RGB image of {width}x{height} holds {} values, got {}",
            3 * width * height,
            data.len()
        );
        Ok(Self {
            width,
            height,
            data,
        })
    }

    /// Channel `c` (0: R, 1: G, 2: B) as a `[height, width]` plane.
    pub fn plane(&self, c: usize) -> &[f32] {
        let n = self.width * self.height;
        &self.data[c * n..(c + 1) * n]
    }

    /// Luma Y of ITU-R BT.601 as SR papers compute it (MATLAB `rgb2ycbcr`: studio range,
    /// 16..235 for 8-bit), divided by 255 so that the peak value is 1.
    pub fn luma(&self) -> Plane {
        let (r, g, b) = (self.plane(0), self.plane(1), self.plane(2));
        let data = (0..r.len())
            .map(|i| (16.0 + 65.481 * r[i] + 128.553 * g[i] + 24.966 * b[i]) / 255.0)
            .collect();
        Plane {
            width: self.width,
            height: self.height,
            data,
        }
    }

    /// The image without a `border`-pixel frame on each side.
    pub fn crop(&self, border: usize) -> anyhow::Result<Image> {
        let planes: Vec<Plane> = (0..3)
            .map(|c| {
                Plane {
                    width: self.width,
                    height: self.height,
                    data: self.plane(c).to_vec(),
                }
                .crop(border)
            })
            .collect::<anyhow::Result<_>>()?;
        let (width, height) = (planes[0].width, planes[0].height);
        let data = planes.into_iter().flat_map(|p| p.data).collect();
        Image::new(width, height, data)
    }
}

/// One channel, `[height, width]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Plane {
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
}

impl Plane {
    pub fn crop(&self, border: usize) -> anyhow::Result<Plane> {
        if self.width <= 2 * border || self.height <= 2 * border {
            bail!(
                "a {}x{} image has nothing left after cropping a {border}-pixel border",
                self.width,
                self.height
            );
        }
        let (w, h) = (self.width - 2 * border, self.height - 2 * border);
        let mut data = Vec::with_capacity(w * h);
        for y in border..border + h {
            data.extend_from_slice(&self.data[y * self.width + border..][..w]);
        }
        Ok(Plane {
            width: w,
            height: h,
            data,
        })
    }

    fn at(&self, x: usize, y: usize) -> f64 {
        self.data[y * self.width + x] as f64
    }
}

fn same_size(a: (usize, usize), b: (usize, usize)) -> anyhow::Result<()> {
    ensure!(
        a == b,
        "images differ in size: {}x{} and {}x{}",
        a.0,
        a.1,
        b.0,
        b.1
    );
    Ok(())
}

/// PSNR in dB for values with peak 1 from the mean squared error; infinite for identical
/// images.
pub fn psnr_from_mse(mse: f64) -> f64 {
    if mse <= 0.0 {
        f64::INFINITY
    } else {
        -10.0 * mse.log10()
    }
}

fn mse(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = x as f64 - y as f64;
            d * d
        })
        .sum::<f64>()
        / a.len() as f64
}

/// PSNR (dB) over the three RGB channels, a `border`-pixel frame cropped.
pub fn psnr_rgb(a: &Image, b: &Image, border: usize) -> anyhow::Result<f64> {
    same_size((a.width, a.height), (b.width, b.height))?;
    let (a, b) = (a.crop(border)?, b.crop(border)?);
    Ok(psnr_from_mse(mse(&a.data, &b.data)))
}

/// PSNR (dB) on luma Y (BT.601), a `border`-pixel frame cropped: the number SR papers report.
pub fn psnr_y(a: &Image, b: &Image, border: usize) -> anyhow::Result<f64> {
    same_size((a.width, a.height), (b.width, b.height))?;
    let (a, b) = (a.luma().crop(border)?, b.luma().crop(border)?);
    Ok(psnr_from_mse(mse(&a.data, &b.data)))
}

/// SSIM's Gaussian window (Wang et al. 2004: 11x11, sigma 1.5), normalised to sum 1.
const SSIM_WINDOW: usize = 11;
const SSIM_SIGMA: f64 = 1.5;
const SSIM_K1: f64 = 0.01;
const SSIM_K2: f64 = 0.03;

fn gaussian_1d() -> [f64; SSIM_WINDOW] {
    let mut g = [0.0; SSIM_WINDOW];
    let c = (SSIM_WINDOW / 2) as f64;
    for (i, v) in g.iter_mut().enumerate() {
        let d = i as f64 - c;
        *v = (-d * d / (2.0 * SSIM_SIGMA * SSIM_SIGMA)).exp();
    }
    let sum: f64 = g.iter().sum();
    g.map(|v| v / sum)
}

/// 'valid' filtering with the separable Gaussian window (as Wang et al.'s reference
/// `ssim_index.m`, `filter2(window, img, 'valid')`): the output is (w - 10) x (h - 10).
fn filter_valid(data: &[f64], w: usize, h: usize) -> Vec<f64> {
    let g = gaussian_1d();
    let ow = w + 1 - SSIM_WINDOW;
    let oh = h + 1 - SSIM_WINDOW;
    let mut rows = vec![0.0; ow * h];
    for y in 0..h {
        for x in 0..ow {
            rows[y * ow + x] = (0..SSIM_WINDOW).map(|k| g[k] * data[y * w + x + k]).sum();
        }
    }
    let mut out = vec![0.0; ow * oh];
    for y in 0..oh {
        for x in 0..ow {
            out[y * ow + x] = (0..SSIM_WINDOW)
                .map(|k| g[k] * rows[(y + k) * ow + x])
                .sum();
        }
    }
    out
}

/// SSIM (Wang et al. 2004: Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, dynamic range 1)
/// on luma Y with a `border`-pixel frame cropped: the mean of the SSIM map.
pub fn ssim_y(a: &Image, b: &Image, border: usize) -> anyhow::Result<f64> {
    same_size((a.width, a.height), (b.width, b.height))?;
    ssim_plane(&a.luma().crop(border)?, &b.luma().crop(border)?)
}

/// SSIM of two planes of the same size (at least 11x11).
pub fn ssim_plane(a: &Plane, b: &Plane) -> anyhow::Result<f64> {
    same_size((a.width, a.height), (b.width, b.height))?;
    let (w, h) = (a.width, a.height);
    if w < SSIM_WINDOW || h < SSIM_WINDOW {
        bail!("SSIM needs at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels after cropping, got {w}x{h}");
    }
    let x: Vec<f64> = a.data.iter().map(|&v| v as f64).collect();
    let y: Vec<f64> = b.data.iter().map(|&v| v as f64).collect();
    let prod = |p: &[f64], q: &[f64]| p.iter().zip(q).map(|(a, b)| a * b).collect::<Vec<_>>();
    let mu_x = filter_valid(&x, w, h);
    let mu_y = filter_valid(&y, w, h);
    let xx = filter_valid(&prod(&x, &x), w, h);
    let yy = filter_valid(&prod(&y, &y), w, h);
    let xy = filter_valid(&prod(&x, &y), w, h);
    let c1 = (SSIM_K1 * 1.0).powi(2);
    let c2 = (SSIM_K2 * 1.0).powi(2);
    let n = mu_x.len();
    let sum: f64 = (0..n)
        .map(|i| {
            let (mx, my) = (mu_x[i], mu_y[i]);
            let sx = xx[i] - mx * mx;
            let sy = yy[i] - my * my;
            let sxy = xy[i] - mx * my;
            ((2.0 * mx * my + c1) * (2.0 * sxy + c2)) / ((mx * mx + my * my + c1) * (sx + sy + c2))
        })
        .sum();
    Ok(sum / n as f64)
}

/// Sharpness: the mean Sobel gradient magnitude of luma Y (Tenengrad's gradient, averaged
/// rather than thresholded and squared, so that it is in the units of Y per pixel and does not
/// depend on a threshold), over the interior pixels of the image with a `border`-pixel frame
/// cropped. Blur lowers it; noise and ringing raise it, so a method is judged by how close it
/// comes to the ground truth's value, not by how high it is.
pub fn sharpness(img: &Image, border: usize) -> anyhow::Result<f64> {
    sharpness_plane(&img.luma().crop(border)?)
}

pub fn sharpness_plane(p: &Plane) -> anyhow::Result<f64> {
    let (w, h) = (p.width, p.height);
    if w < 3 || h < 3 {
        bail!("sharpness needs at least 3x3 pixels after cropping, got {w}x{h}");
    }
    let mut sum = 0.0;
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let gx = (p.at(x + 1, y - 1) + 2.0 * p.at(x + 1, y) + p.at(x + 1, y + 1))
                - (p.at(x - 1, y - 1) + 2.0 * p.at(x - 1, y) + p.at(x - 1, y + 1));
            let gy = (p.at(x - 1, y + 1) + 2.0 * p.at(x, y + 1) + p.at(x + 1, y + 1))
                - (p.at(x - 1, y - 1) + 2.0 * p.at(x, y - 1) + p.at(x + 1, y - 1));
            sum += (gx * gx + gy * gy).sqrt();
        }
    }
    Ok(sum / ((w - 2) * (h - 2)) as f64)
}

/// Blockiness at a grid of `grid` pixels (the model's token: the VAE's spatial compression times
/// the transformer's patch): the mean absolute luma step between neighbouring pixels across the
/// grid's lines (between pixel `k * grid - 1` and `k * grid`, rows and columns), divided by the
/// mean step between the other neighbours. Content without a grid scores about 1; a method that
/// leaves token edges scores above 1 (above the ground truth's value).
pub fn blockiness(img: &Image, grid: usize) -> anyhow::Result<f64> {
    ensure!(
        grid >= 2,
        "the blockiness grid must be at least 2 pixels, got {grid}"
    );
    let p = img.luma();
    let (w, h) = (p.width, p.height);
    ensure!(
        w > grid && h > grid,
        "blockiness at a {grid}-pixel grid needs more than {grid}x{grid} pixels, got {w}x{h}"
    );
    let (mut on, mut n_on, mut off, mut n_off) = (0.0, 0usize, 0.0, 0usize);
    let mut step = |d: f64, across: bool| {
        if across {
            on += d;
            n_on += 1;
        } else {
            off += d;
            n_off += 1;
        }
    };
    for y in 0..h {
        for x in 1..w {
            step((p.at(x, y) - p.at(x - 1, y)).abs(), x % grid == 0);
        }
    }
    for y in 1..h {
        for x in 0..w {
            step((p.at(x, y) - p.at(x, y - 1)).abs(), y % grid == 0);
        }
    }
    let off = off / n_off.max(1) as f64;
    let on = on / n_on.max(1) as f64;
    // flat pictures have no steps anywhere: no grid either
    Ok(if off > 0.0 {
        on / off
    } else if on > 0.0 {
        f64::INFINITY
    } else {
        1.0
    })
}

/// Temporal flicker beyond the ground truth's motion: the mean absolute difference, on luma Y
/// in 8-bit units (0..255) with a `border`-pixel frame cropped, between the output's change from
/// the previous frame and the ground truth's change over the same frames. 0 when the output
/// changes exactly as the ground truth does.
pub fn flicker(
    prev: &Image,
    cur: &Image,
    gt_prev: &Image,
    gt_cur: &Image,
    border: usize,
) -> anyhow::Result<f64> {
    for (a, b) in [(prev, cur), (gt_prev, gt_cur), (cur, gt_cur)] {
        same_size((a.width, a.height), (b.width, b.height))?;
    }
    let [p, c, gp, gc] = [prev, cur, gt_prev, gt_cur].map(|i| i.luma().crop(border));
    let (p, c, gp, gc) = (p?, c?, gp?, gc?);
    let sum: f64 = (0..c.data.len())
        .map(|i| ((c.data[i] - p.data[i]) as f64 - (gc.data[i] - gp.data[i]) as f64).abs())
        .sum();
    Ok(255.0 * sum / c.data.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blockiness_finds_a_grid_and_flicker_the_extra_change() {
        let tex = texture(64, 48);
        let plain = blockiness(&tex, 8).unwrap();
        assert!((0.8..1.25).contains(&plain), "{plain}");
        // a constant offset per 8x8 block: steps at the grid lines only
        let mut blocky = tex.clone();
        for c in 0..3 {
            for y in 0..48 {
                for x in 0..64 {
                    let i = c * 64 * 48 + y * 64 + x;
                    blocky.data[i] += 0.1 * (((x / 8) + (y / 8)) % 2) as f32;
                }
            }
        }
        let b = blockiness(&blocky, 8).unwrap();
        assert!(b > 1.5 * plain, "{b} vs {plain}");
        let flat = Image::new(16, 16, vec![0.5; 3 * 256]).unwrap();
        assert_eq!(blockiness(&flat, 8).unwrap(), 1.0);
        assert!(format!("{}", blockiness(&flat, 16).unwrap_err()).contains("16x16"));
        // flicker: zero when the output moves as the ground truth does, else the extra change
        assert_eq!(flicker(&tex, &tex, &blocky, &blocky, 4).unwrap(), 0.0);
        let mut brighter = tex.clone();
        brighter.data.iter_mut().for_each(|v| *v += 1.0 / 255.0);
        let f = flicker(&tex, &brighter, &tex, &tex, 4).unwrap();
        // luma of +1/255 on every channel: (65.481 + 128.553 + 24.966) / 255 of a code value
        assert!((f - 219.0 / 255.0).abs() < 1e-3, "{f}");
    }

    /// A deterministic textured image (sums of sines), values in [0.1, 0.9].
    fn texture(w: usize, h: usize) -> Image {
        let mut data = Vec::with_capacity(3 * w * h);
        for c in 0..3 {
            for y in 0..h {
                for x in 0..w {
                    let (xf, yf) = (x as f32, y as f32);
                    let v = 0.5
                        + 0.2 * (xf * 0.7 + c as f32).sin()
                        + 0.2 * (yf * 0.45 + xf * 0.1).cos();
                    data.push(v);
                }
            }
        }
        Image::new(w, h, data).unwrap()
    }

    /// Deterministic pseudo-random noise in [-amp, amp] (a 64-bit LCG).
    fn noisy(img: &Image, amp: f32, seed: u64) -> Image {
        let mut s = seed;
        let data = img
            .data
            .iter()
            .map(|&v| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (s >> 40) as f32 / (1u64 << 24) as f32;
                (v + amp * (2.0 * u - 1.0)).clamp(0.0, 1.0)
            })
            .collect();
        Image::new(img.width, img.height, data).unwrap()
    }

    /// 3x3 box blur (edges clamped).
    fn blurred(img: &Image) -> Image {
        let (w, h) = (img.width, img.height);
        let mut data = vec![0.0; img.data.len()];
        for c in 0..3 {
            let p = img.plane(c);
            for y in 0..h {
                for x in 0..w {
                    let mut s = 0.0;
                    for dy in -1i64..=1 {
                        for dx in -1i64..=1 {
                            let yy = (y as i64 + dy).clamp(0, h as i64 - 1) as usize;
                            let xx = (x as i64 + dx).clamp(0, w as i64 - 1) as usize;
                            s += p[yy * w + xx];
                        }
                    }
                    data[c * w * h + y * w + x] = s / 9.0;
                }
            }
        }
        Image::new(w, h, data).unwrap()
    }

    #[test]
    fn identical_images_have_infinite_psnr_and_ssim_one() {
        let a = texture(40, 32);
        assert_eq!(psnr_rgb(&a, &a, 4).unwrap(), f64::INFINITY);
        assert_eq!(psnr_y(&a, &a, 4).unwrap(), f64::INFINITY);
        assert!((ssim_y(&a, &a, 4).unwrap() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn constant_offset_gives_the_known_psnr() {
        let a = texture(40, 32);
        let b = Image::new(a.width, a.height, a.data.iter().map(|v| v + 0.05).collect()).unwrap();
        // MSE = 0.05^2 -> PSNR = -10 log10(0.0025) = 26.0206 dB
        let expected = -10.0 * (0.05f64 * 0.05).log10();
        assert!((psnr_rgb(&a, &b, 4).unwrap() - expected).abs() < 1e-4);
        // Y moves by 0.05 * (65.481 + 128.553 + 24.966) / 255 = 0.05 * 219 / 255.
        let dy = 0.05f64 * 219.0 / 255.0;
        let expected_y = -10.0 * (dy * dy).log10();
        assert!((psnr_y(&a, &b, 4).unwrap() - expected_y).abs() < 1e-4);
    }

    #[test]
    fn border_is_excluded() {
        let a = texture(40, 32);
        let mut b = a.clone();
        // Change only the outer 4-pixel frame of every channel.
        for c in 0..3 {
            for y in 0..32 {
                for x in 0..40 {
                    if !(4..36).contains(&x) || !(4..28).contains(&y) {
                        b.data[c * 40 * 32 + y * 40 + x] = 0.0;
                    }
                }
            }
        }
        assert_eq!(psnr_y(&a, &b, 4).unwrap(), f64::INFINITY);
        assert!(psnr_y(&a, &b, 3).unwrap().is_finite());
        assert!((ssim_y(&a, &b, 4).unwrap() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn ssim_is_symmetric_and_below_one_for_noise() {
        let a = texture(48, 40);
        let b = noisy(&a, 0.1, 7);
        let ab = ssim_y(&a, &b, 4).unwrap();
        let ba = ssim_y(&b, &a, 4).unwrap();
        assert!((ab - ba).abs() < 1e-12, "{ab} {ba}");
        assert!(ab < 0.99 && ab > 0.0, "{ab}");
        // More noise, lower SSIM.
        let c = noisy(&a, 0.3, 7);
        assert!(ssim_y(&a, &c, 4).unwrap() < ab);
    }

    #[test]
    fn ssim_of_a_flat_image_against_itself_shifted_in_mean() {
        // Constant images: variances and covariance are 0, so SSIM is the luminance term
        // (2 mx my + C1) / (mx^2 + my^2 + C1).
        let plane = |v: f32| Plane {
            width: 16,
            height: 16,
            data: vec![v; 256],
        };
        let (x, y) = (0.4f64, 0.6f64);
        let c1 = 0.01f64 * 0.01;
        let expected = (2.0 * x * y + c1) / (x * x + y * y + c1);
        let got = ssim_plane(&plane(0.4), &plane(0.6)).unwrap();
        assert!((got - expected).abs() < 1e-6, "{got} {expected}");
    }

    #[test]
    fn blur_lowers_sharpness() {
        let a = texture(48, 40);
        let s = sharpness(&a, 4).unwrap();
        let sb = sharpness(&blurred(&a), 4).unwrap();
        assert!(s > 0.0 && sb < s, "{s} {sb}");
        // A flat image has none.
        let flat = Image::new(16, 16, vec![0.5; 3 * 256]).unwrap();
        assert_eq!(sharpness(&flat, 0).unwrap(), 0.0);
    }

    #[test]
    fn size_mismatch_and_tiny_images_are_errors() {
        let a = texture(40, 32);
        let b = texture(32, 32);
        let e = psnr_y(&a, &b, 4).unwrap_err().to_string();
        assert!(e.contains("40x32") && e.contains("32x32"), "{e}");
        let small = texture(16, 16);
        let e = ssim_y(&small, &small, 4).unwrap_err().to_string();
        assert!(e.contains("8x8"), "{e}");
        let e = psnr_y(&small, &small, 8).unwrap_err().to_string();
        assert!(e.contains("8-pixel border"), "{e}");
    }
}
