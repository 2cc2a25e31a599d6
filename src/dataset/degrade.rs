//! The Real-ESRGAN high-order degradation model (Wang et al. 2021, "Real-ESRGAN: Training
//! Real-World Blind Super-Resolution with Pure Synthetic Data", §3; what it does follows their
//! `degradations.py`, `realesrgan_dataset.py` and `realesrgan_model.py`, the ranges their
//! `train_realesrgan_x4plus.yml`): blur -> resize -> noise -> JPEG, twice, then a final resize to
//! the LR size with a 2-D sinc filter and a last JPEG in random order.
//!
//! For video (pseudo-video clips, supplementary §6 of the TurboVSR paper) the PARAMETERS are drawn
//! once per clip ([`DegradeParams::sample`]) and every frame is degraded with them; only the noise
//! is drawn afresh per frame, as a real camera's sensor noise would be.

use std::f32::consts::PI;

use anyhow::{Context, Result};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::Serialize;

use super::ops::{filter2d, resize, to_u8, Img, Kernel, ResizeMode};

/// The blur kernel families of Real-ESRGAN (`random_mixed_kernels`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelKind {
    Iso,
    Aniso,
    GeneralizedIso,
    GeneralizedAniso,
    PlateauIso,
    PlateauAniso,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BlurConfig {
    /// Odd kernel sizes to draw from uniformly (Real-ESRGAN: 7, 9, ..., 21).
    pub sizes: Vec<usize>,
    /// Kernel families with their probabilities (summing to 1).
    pub kinds: Vec<(KernelKind, f32)>,
    /// Gaussian sigma range in pixels (both axes for anisotropic kernels).
    pub sigma: (f32, f32),
    /// Shape range of the generalized Gaussian, exp(-0.5 d^beta).
    pub betag: (f32, f32),
    /// Shape range of the plateau kernel, 1 / (d^beta + 1).
    pub betap: (f32, f32),
    /// Probability of a 2-D sinc (ringing/overshoot) kernel instead of the families above.
    pub sinc_prob: f32,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StageConfig {
    /// Probability that this stage blurs at all (Real-ESRGAN: 1 first, 0.8 second).
    pub blur_prob: f32,
    pub blur: BlurConfig,
    /// Probabilities of up / down / keep.
    pub resize_prob: [f32; 3],
    /// Scale range: up draws from (1, max), down from (min, 1).
    pub resize_range: (f32, f32),
    /// Probability of Gaussian (else Poisson) noise.
    pub gaussian_noise_prob: f32,
    /// Gaussian noise sigma range, in 8-bit levels (x / 255).
    pub noise_range: (f32, f32),
    pub poisson_scale_range: (f32, f32),
    /// Probability that the noise is the same in all three channels.
    pub gray_noise_prob: f32,
    /// JPEG quality range at the end of this stage; `None`: no JPEG here (the second stage's JPEG
    /// is the final one, [`DegradeConfig::final_jpeg_range`]).
    pub jpeg_range: Option<(u8, u8)>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DegradeConfig {
    pub name: String,
    pub first: StageConfig,
    /// `None`: single-order degradation.
    pub second: Option<StageConfig>,
    /// Probability of the final sinc filter (else no filter).
    pub final_sinc_prob: f32,
    /// Kernel sizes of the final sinc filter.
    pub final_sinc_sizes: Vec<usize>,
    pub final_jpeg_range: (u8, u8),
}

fn odd_sizes(lo: usize, hi: usize) -> Vec<usize> {
    (lo..=hi).step_by(2).collect()
}

fn realesrgan_kinds() -> Vec<(KernelKind, f32)> {
    vec![
        (KernelKind::Iso, 0.45),
        (KernelKind::Aniso, 0.25),
        (KernelKind::GeneralizedIso, 0.12),
        (KernelKind::GeneralizedAniso, 0.03),
        (KernelKind::PlateauIso, 0.12),
        (KernelKind::PlateauAniso, 0.03),
    ]
}

impl DegradeConfig {
    /// Real-ESRGAN's x4 training settings (`train_realesrgan_x4plus.yml`).
    pub fn realesrgan() -> DegradeConfig {
        DegradeConfig {
            name: "realesrgan".into(),
            first: StageConfig {
                blur_prob: 1.0,
                blur: BlurConfig {
                    sizes: odd_sizes(7, 21),
                    kinds: realesrgan_kinds(),
                    sigma: (0.2, 3.0),
                    betag: (0.5, 4.0),
                    betap: (1.0, 2.0),
                    sinc_prob: 0.1,
                },
                resize_prob: [0.2, 0.7, 0.1],
                resize_range: (0.15, 1.5),
                gaussian_noise_prob: 0.5,
                noise_range: (1.0, 30.0),
                poisson_scale_range: (0.05, 3.0),
                gray_noise_prob: 0.4,
                jpeg_range: Some((30, 95)),
            },
            second: Some(StageConfig {
                blur_prob: 0.8,
                blur: BlurConfig {
                    sizes: odd_sizes(7, 21),
                    kinds: realesrgan_kinds(),
                    sigma: (0.2, 1.5),
                    betag: (0.5, 4.0),
                    betap: (1.0, 2.0),
                    sinc_prob: 0.1,
                },
                resize_prob: [0.3, 0.4, 0.3],
                resize_range: (0.3, 1.2),
                gaussian_noise_prob: 0.5,
                noise_range: (1.0, 25.0),
                poisson_scale_range: (0.05, 2.5),
                gray_noise_prob: 0.4,
                jpeg_range: None,
            }),
            final_sinc_prob: 0.8,
            final_sinc_sizes: odd_sizes(7, 21),
            final_jpeg_range: (30, 95),
        }
    }

    /// A single-order, gentler pipeline for footage that is merely low-resolution and lightly
    /// compressed (a small model learns this one faster; the trainer chooses): Gaussian-family
    /// blur with sigma up to 1.5, mild resizing, noise up to 10 levels, JPEG 60-95.
    pub fn mild() -> DegradeConfig {
        DegradeConfig {
            name: "mild".into(),
            first: StageConfig {
                blur_prob: 1.0,
                blur: BlurConfig {
                    sizes: odd_sizes(7, 15),
                    kinds: vec![
                        (KernelKind::Iso, 0.6),
                        (KernelKind::Aniso, 0.2),
                        (KernelKind::GeneralizedIso, 0.1),
                        (KernelKind::PlateauIso, 0.1),
                    ],
                    sigma: (0.2, 1.5),
                    betag: (0.5, 4.0),
                    betap: (1.0, 2.0),
                    sinc_prob: 0.0,
                },
                resize_prob: [0.2, 0.5, 0.3],
                resize_range: (0.5, 1.2),
                gaussian_noise_prob: 0.5,
                noise_range: (1.0, 10.0),
                poisson_scale_range: (0.05, 1.0),
                gray_noise_prob: 0.4,
                jpeg_range: None,
            },
            second: None,
            final_sinc_prob: 0.3,
            final_sinc_sizes: odd_sizes(7, 21),
            final_jpeg_range: (60, 95),
        }
    }

    /// A preset by name (`realesrgan` or `mild`).
    pub fn preset(name: &str) -> Result<DegradeConfig> {
        match name {
            "realesrgan" => Ok(DegradeConfig::realesrgan()),
            "mild" => Ok(DegradeConfig::mild()),
            other => anyhow::bail!("unknown degradation preset '{other}' (realesrgan or mild)"),
        }
    }
}

fn uniform(rng: &mut ChaCha8Rng, (lo, hi): (f32, f32)) -> f32 {
    if hi > lo {
        rng.random_range(lo..hi)
    } else {
        lo
    }
}

fn choose<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

fn weighted(rng: &mut ChaCha8Rng, weights: &[f32]) -> usize {
    let total: f32 = weights.iter().sum();
    let mut u = rng.random::<f32>() * total;
    for (i, &w) in weights.iter().enumerate() {
        if u < w {
            return i;
        }
        u -= w;
    }
    weights.len() - 1
}

/// Bessel function of the first kind, order 1, by the trapezoidal rule on Bessel's integral
/// J1(x) = 1/(2 pi) * integral over one period of cos(t - x sin t) dt: the integrand is smooth and
/// periodic, so the rule converges geometrically (error < 1e-12 for |x| < 50 with 128 nodes; the
/// sinc kernels need |x| <= pi * 15).
pub fn bessel_j1(x: f64) -> f64 {
    const N: usize = 128;
    let mut s = 0.0;
    for i in 0..N {
        let t = 2.0 * std::f64::consts::PI * i as f64 / N as f64;
        s += (t - x * t.sin()).cos();
    }
    s / N as f64
}

fn normalized(size: usize, mut weights: Vec<f64>) -> Kernel {
    let sum: f64 = weights.iter().sum();
    for w in &mut weights {
        *w /= sum;
    }
    Kernel {
        size,
        weights: weights.into_iter().map(|w| w as f32).collect(),
    }
}

/// The 2-D sinc (circular low-pass) kernel with cutoff `omega` (radians per pixel), normalised.
pub fn sinc_kernel(size: usize, omega: f32) -> Kernel {
    let c = (size / 2) as i64;
    let omega = omega as f64;
    // the kernel depends on the squared radius only: evaluate J1 once per distinct value
    let mut by_r2 = vec![f64::NAN; (2 * c * c + 1) as usize];
    let mut w = Vec::with_capacity(size * size);
    for y in 0..size as i64 {
        for x in 0..size as i64 {
            let r2 = ((x - c).pow(2) + (y - c).pow(2)) as usize;
            if by_r2[r2].is_nan() {
                let r = (r2 as f64).sqrt();
                by_r2[r2] = if r2 == 0 {
                    omega * omega / (4.0 * std::f64::consts::PI)
                } else {
                    omega * bessel_j1(omega * r) / (2.0 * std::f64::consts::PI * r)
                };
            }
            w.push(by_r2[r2]);
        }
    }
    normalized(size, w)
}

/// A bivariate kernel of the given family: d = x^T Sigma^-1 x with Sigma = R diag(sx^2, sy^2) R^T.
pub fn family_kernel(
    size: usize,
    kind: KernelKind,
    sigma_x: f32,
    sigma_y: f32,
    theta: f32,
    beta: f32,
) -> Kernel {
    let (s, c) = (theta as f64).sin_cos();
    let (a, b) = ((sigma_x as f64).powi(2), (sigma_y as f64).powi(2));
    // Sigma^-1 = R diag(1/a, 1/b) R^T
    let i00 = c * c / a + s * s / b;
    let i01 = c * s / a - c * s / b;
    let i11 = s * s / a + c * c / b;
    let half = (size / 2) as f64;
    let beta = beta as f64;
    let mut w = Vec::with_capacity(size * size);
    for y in 0..size {
        for x in 0..size {
            let (u, v) = (x as f64 - half, y as f64 - half);
            let d = i00 * u * u + 2.0 * i01 * u * v + i11 * v * v;
            w.push(match kind {
                KernelKind::Iso | KernelKind::Aniso => (-0.5 * d).exp(),
                KernelKind::GeneralizedIso | KernelKind::GeneralizedAniso => {
                    (-0.5 * d.powf(beta)).exp()
                }
                KernelKind::PlateauIso | KernelKind::PlateauAniso => 1.0 / (d.powf(beta) + 1.0),
            });
        }
    }
    normalized(size, w)
}

/// Real-ESRGAN draws a shape beta below 1 or above 1 with equal odds.
fn sample_beta(rng: &mut ChaCha8Rng, (lo, hi): (f32, f32)) -> f32 {
    if rng.random::<f32>() < 0.5 {
        uniform(rng, (lo, lo.max(1.0).min(hi)))
    } else {
        uniform(rng, (lo.max(1.0).min(hi), hi))
    }
}

fn sample_blur(rng: &mut ChaCha8Rng, cfg: &BlurConfig) -> Kernel {
    let size = *choose(rng, &cfg.sizes);
    if rng.random::<f32>() < cfg.sinc_prob {
        // small kernels cannot hold a low cutoff's ringing, so Real-ESRGAN raises its floor
        let lo = if size < 13 { PI / 3.0 } else { PI / 5.0 };
        return sinc_kernel(size, uniform(rng, (lo, PI)));
    }
    let probs: Vec<f32> = cfg.kinds.iter().map(|k| k.1).collect();
    let kind = cfg.kinds[weighted(rng, &probs)].0;
    let iso = matches!(
        kind,
        KernelKind::Iso | KernelKind::GeneralizedIso | KernelKind::PlateauIso
    );
    let sx = uniform(rng, cfg.sigma);
    let (sy, theta) = if iso {
        (sx, 0.0)
    } else {
        (uniform(rng, cfg.sigma), uniform(rng, (-PI, PI)))
    };
    let beta = match kind {
        KernelKind::GeneralizedIso | KernelKind::GeneralizedAniso => sample_beta(rng, cfg.betag),
        KernelKind::PlateauIso | KernelKind::PlateauAniso => sample_beta(rng, cfg.betap),
        _ => 1.0,
    };
    family_kernel(size, kind, sx, sy, theta, beta)
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Noise {
    /// sigma in [0, 1] units
    Gaussian {
        sigma: f32,
        gray: bool,
    },
    Poisson {
        scale: f32,
        gray: bool,
    },
}

/// Everything one stage applies, drawn once per clip.
#[derive(Clone, Debug, PartialEq)]
pub struct StageParams {
    pub kernel: Option<Kernel>,
    pub resize_scale: f32,
    pub resize_mode: ResizeMode,
    pub noise: Noise,
    pub jpeg_quality: Option<u8>,
}

/// All parameters of one clip's degradation.
#[derive(Clone, Debug, PartialEq)]
pub struct DegradeParams {
    pub first: StageParams,
    pub second: Option<StageParams>,
    /// true: resize + sinc, then JPEG; false: JPEG, then resize + sinc.
    pub resize_first: bool,
    pub final_sinc: Option<Kernel>,
    pub final_mode: ResizeMode,
    pub final_jpeg: u8,
}

fn sample_stage(rng: &mut ChaCha8Rng, cfg: &StageConfig) -> StageParams {
    let kernel = if rng.random::<f32>() < cfg.blur_prob {
        Some(sample_blur(rng, &cfg.blur))
    } else {
        None
    };
    let resize_scale = match weighted(rng, &cfg.resize_prob) {
        0 => uniform(rng, (1.0, cfg.resize_range.1.max(1.0))),
        1 => uniform(rng, (cfg.resize_range.0.min(1.0), 1.0)),
        _ => 1.0,
    };
    let resize_mode = *choose(rng, &ResizeMode::ALL);
    let gaussian = rng.random::<f32>() < cfg.gaussian_noise_prob;
    let gray = rng.random::<f32>() < cfg.gray_noise_prob;
    let noise = if gaussian {
        Noise::Gaussian {
            sigma: uniform(rng, cfg.noise_range) / 255.0,
            gray,
        }
    } else {
        Noise::Poisson {
            scale: uniform(rng, cfg.poisson_scale_range),
            gray,
        }
    };
    let jpeg_quality = cfg
        .jpeg_range
        .map(|(lo, hi)| rng.random_range(lo.min(hi)..=hi));
    StageParams {
        kernel,
        resize_scale,
        resize_mode,
        noise,
        jpeg_quality,
    }
}

impl DegradeParams {
    pub fn sample(cfg: &DegradeConfig, rng: &mut ChaCha8Rng) -> DegradeParams {
        let first = sample_stage(rng, &cfg.first);
        let second = cfg.second.as_ref().map(|c| sample_stage(rng, c));
        let resize_first = rng.random::<f32>() < 0.5;
        let final_sinc = if rng.random::<f32>() < cfg.final_sinc_prob {
            let size = *choose(rng, &cfg.final_sinc_sizes);
            Some(sinc_kernel(size, uniform(rng, (PI / 3.0, PI))))
        } else {
            None
        };
        let final_mode = *choose(rng, &ResizeMode::ALL);
        let (lo, hi) = cfg.final_jpeg_range;
        let final_jpeg = rng.random_range(lo.min(hi)..=hi);
        DegradeParams {
            first,
            second,
            resize_first,
            final_sinc,
            final_mode,
            final_jpeg,
        }
    }
}

/// Inverse-CDF tables of Poisson(level / 255 * vals) for the 256 levels: one uniform draw and a
/// binary search per sample (exact up to the f64 CDF, several times faster than rejection
/// sampling), built once per `vals` (a power of two <= 256) for the whole process.
struct PoissonTable {
    /// `cdf[level]`: P(X <= k) for k = 0, 1, ..., until 1 - P < 1e-12.
    cdf: Vec<Vec<f64>>,
    /// `guide[level][j]`: the first k with cdf > j / GUIDE, where the search for u starts
    /// (Chen and Asau's guide table: one or two comparisons per sample on average).
    guide: Vec<Vec<u32>>,
}

const GUIDE: usize = 128;

impl PoissonTable {
    fn new(vals: usize) -> PoissonTable {
        let cdf = (0..256)
            .map(|level| {
                let lam = level as f64 / 255.0 * vals as f64;
                let mut p = (-lam).exp();
                let mut acc = p;
                let mut c = vec![acc];
                let mut k = 0.0;
                while 1.0 - acc > 1e-12 && (k < lam || p > 0.0) {
                    k += 1.0;
                    p *= lam / k;
                    acc += p;
                    c.push(acc);
                }
                c
            })
            .collect::<Vec<Vec<f64>>>();
        let guide = cdf
            .iter()
            .map(|c| {
                (0..GUIDE)
                    .map(|j| {
                        let u = j as f64 / GUIDE as f64;
                        c.partition_point(|&p| p <= u).min(c.len() - 1) as u32
                    })
                    .collect()
            })
            .collect();
        PoissonTable { cdf, guide }
    }

    fn sample(&self, level: u8, rng: &mut ChaCha8Rng) -> usize {
        let c = &self.cdf[level as usize];
        let u = rng.random::<f64>();
        let mut k = self.guide[level as usize][(u * GUIDE as f64) as usize] as usize;
        while k + 1 < c.len() && c[k] <= u {
            k += 1;
        }
        k
    }
}

fn poisson_table(vals: usize) -> &'static PoissonTable {
    use std::sync::OnceLock;
    static TABLES: [OnceLock<PoissonTable>; 9] = [const { OnceLock::new() }; 9];
    let i = vals.trailing_zeros() as usize;
    TABLES[i.min(8)].get_or_init(|| PoissonTable::new(1 << i.min(8)))
}

/// Add noise in place (Real-ESRGAN `random_add_gaussian_noise_pt` / `random_add_poisson_noise_pt`)
/// and clamp to [0, 1]. The noise itself is drawn from `rng`, so every call gives fresh noise.
pub fn add_noise(img: &mut Img, noise: Noise, rng: &mut ChaCha8Rng) {
    match noise {
        Noise::Gaussian { sigma, gray } => {
            if gray {
                for px in img.data.chunks_exact_mut(3) {
                    let n = sigma * rng.sample::<f32, _>(StandardNormal);
                    px.iter_mut().for_each(|v| *v += n);
                }
            } else {
                for v in &mut img.data {
                    *v += sigma * rng.sample::<f32, _>(StandardNormal);
                }
            }
        }
        Noise::Poisson { scale, gray } => {
            // Real-ESRGAN quantises to 8 bits and uses vals = 2^ceil(log2(#distinct levels in the
            // image)): Poisson(level * vals) / vals - level, so a smooth image (few levels) is
            // noisier than a detailed one; one Poisson law per level, built once per call
            let levels: Vec<u8> = if gray {
                img.data
                    .chunks_exact(3)
                    .map(|p| to_u8(0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]))
                    .collect()
            } else {
                img.data.iter().map(|&v| to_u8(v)).collect()
            };
            let mut seen = [false; 256];
            levels.iter().for_each(|&l| seen[l as usize] = true);
            let distinct = seen.iter().filter(|&&b| b).count().max(1);
            let vals = distinct.next_power_of_two();
            let table = poisson_table(vals);
            let draw = |level: u8, rng: &mut ChaCha8Rng| -> f32 {
                let lam = level as f64 / 255.0;
                (table.sample(level, rng) as f64 / vals as f64 - lam) as f32
            };
            if gray {
                for (px, &l) in img.data.chunks_exact_mut(3).zip(&levels) {
                    let n = scale * draw(l, rng);
                    px.iter_mut().for_each(|v| *v += n);
                }
            } else {
                for (v, &l) in img.data.iter_mut().zip(&levels) {
                    // Real-ESRGAN adds the noise to the rounded image
                    *v = l as f32 / 255.0 + scale * draw(l, rng);
                }
            }
        }
    }
    img.clamp01();
}

/// JPEG-compress and decode at `quality` (1-100) with the `image` crate's baseline encoder.
pub fn jpeg(img: &Img, quality: u8) -> Result<Img> {
    let rgb = img.to_rgb8();
    let mut buf = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, quality.clamp(1, 100))
        .encode_image(&rgb)
        .context("JPEG-encoding a degraded frame")?;
    let back = image::load_from_memory_with_format(&buf, image::ImageFormat::Jpeg)
        .context("decoding the JPEG of a degraded frame")?
        .to_rgb8();
    Ok(Img::from_rgb8(&back))
}

fn scaled(len: usize, factor: f32) -> usize {
    ((len as f32 * factor) as usize).max(1)
}

/// Degrade one HR frame to `lr_w` x `lr_h` with a clip's `params`; `rng` supplies the noise.
pub fn degrade_frame(
    hr: &Img,
    params: &DegradeParams,
    lr_w: usize,
    lr_h: usize,
    rng: &mut ChaCha8Rng,
) -> Result<Img> {
    let mut x = hr.clone();
    // first stage: sizes relative to the HR frame (F.interpolate(scale_factor=...))
    let s1 = &params.first;
    if let Some(k) = &s1.kernel {
        x = filter2d(&x, k);
    }
    x = resize(
        &x,
        scaled(hr.width, s1.resize_scale),
        scaled(hr.height, s1.resize_scale),
        s1.resize_mode,
    );
    add_noise(&mut x, s1.noise, rng);
    if let Some(q) = s1.jpeg_quality {
        x = jpeg(&x, q)?;
    }
    // second stage: sizes relative to the LR target (Real-ESRGAN: ori / scale * s)
    if let Some(s2) = &params.second {
        if let Some(k) = &s2.kernel {
            x = filter2d(&x, k);
        }
        x = resize(
            &x,
            scaled(lr_w, s2.resize_scale),
            scaled(lr_h, s2.resize_scale),
            s2.resize_mode,
        );
        add_noise(&mut x, s2.noise, rng);
        if let Some(q) = s2.jpeg_quality {
            x = jpeg(&x, q)?;
        }
    }
    let resize_sinc = |x: &Img| {
        let y = resize(x, lr_w, lr_h, params.final_mode);
        match &params.final_sinc {
            Some(k) => filter2d(&y, k),
            None => y,
        }
    };
    if params.resize_first {
        x = resize_sinc(&x);
        x.clamp01();
        x = jpeg(&x, params.final_jpeg)?;
    } else {
        x.clamp01();
        x = jpeg(&x, params.final_jpeg)?;
        x = resize_sinc(&x);
    }
    x.quantize();
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn flat(w: usize, h: usize, v: f32) -> Img {
        Img {
            width: w,
            height: h,
            data: vec![v; w * h * 3],
        }
    }

    fn assert_symmetric(k: &Kernel, point_only: bool) {
        let n = k.size;
        for y in 0..n {
            for x in 0..n {
                let w = k.weights[y * n + x];
                // point symmetry (every family: d(x) = d(-x))
                let p = k.weights[(n - 1 - y) * n + (n - 1 - x)];
                assert!((w - p).abs() < 1e-7, "point symmetry at {x},{y}");
                if !point_only {
                    let t = k.weights[x * n + y];
                    let m = k.weights[y * n + (n - 1 - x)];
                    assert!((w - t).abs() < 1e-7 && (w - m).abs() < 1e-7, "iso symmetry");
                }
            }
        }
    }

    #[test]
    fn bessel_j1_matches_tabulated_values() {
        // Abramowitz & Stegun table 9.1
        for (x, want) in [
            (0.0, 0.0),
            (1.0, 0.440_050_585_7),
            (2.5, 0.497_094_102_5),
            (10.0, 0.043_472_746_2),
            (-1.0, -0.440_050_585_7),
        ] {
            assert!((bessel_j1(x) - want).abs() < 1e-9, "J1({x})");
        }
    }

    #[test]
    fn kernels_sum_to_one_and_are_symmetric() {
        for size in [7, 13, 21] {
            for kind in [
                KernelKind::Iso,
                KernelKind::GeneralizedIso,
                KernelKind::PlateauIso,
            ] {
                let k = family_kernel(size, kind, 1.7, 1.7, 0.0, 1.5);
                assert!((k.weights.iter().sum::<f32>() - 1.0).abs() < 1e-5);
                assert_symmetric(&k, false);
            }
            for kind in [
                KernelKind::Aniso,
                KernelKind::GeneralizedAniso,
                KernelKind::PlateauAniso,
            ] {
                let k = family_kernel(size, kind, 0.6, 2.8, 0.7, 0.8);
                assert!((k.weights.iter().sum::<f32>() - 1.0).abs() < 1e-5);
                assert_symmetric(&k, true);
                // really anisotropic: not symmetric under transposition
                let n = k.size;
                let asym = (0..n * n)
                    .map(|i| (k.weights[i] - k.weights[(i % n) * n + i / n]).abs())
                    .fold(0.0f32, f32::max);
                assert!(asym > 1e-3);
            }
            let s = sinc_kernel(size, PI / 2.0);
            assert!((s.weights.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            assert_symmetric(&s, false);
            // a low cutoff rings: the sinc has negative lobes
            assert!(s.weights.iter().any(|&w| w < 0.0));
        }
    }

    #[test]
    fn sampled_kernels_sum_to_one() {
        let cfg = DegradeConfig::realesrgan();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..200 {
            let k = sample_blur(&mut rng, &cfg.first.blur);
            assert!(k.size % 2 == 1 && (7..=21).contains(&k.size));
            assert!((k.weights.iter().sum::<f32>() - 1.0).abs() < 1e-4);
            assert!(k.weights.iter().all(|w| w.is_finite()));
        }
    }

    #[test]
    fn gaussian_noise_sigma_is_recovered() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for gray in [false, true] {
            let mut img = flat(128, 128, 0.5);
            let sigma = 12.0 / 255.0;
            add_noise(&mut img, Noise::Gaussian { sigma, gray }, &mut rng);
            let n = img.data.len() as f64;
            let mean = img.data.iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = img
                .data
                .iter()
                .map(|&v| (v as f64 - mean).powi(2))
                .sum::<f64>()
                / n;
            let got = var.sqrt() as f32;
            assert!(
                (got - sigma).abs() < 0.1 * sigma,
                "gray={gray}: {got} vs {sigma}"
            );
            assert!((mean - 0.5).abs() < 0.01);
            let px_equal = img.data.chunks(3).all(|p| p[0] == p[1] && p[1] == p[2]);
            assert_eq!(px_equal, gray);
        }
    }

    #[test]
    fn poisson_noise_variance_follows_the_level_and_the_level_count() {
        // levels 0..=204 (205 distinct -> vals 256): noise variance = mean level / 256
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (w, h) = (205, 160);
        let mut img = flat(w, h, 0.0);
        for (i, v) in img.data.iter_mut().enumerate() {
            *v = ((i / 3) % 205) as f32 / 255.0;
        }
        let before = img.clone();
        add_noise(
            &mut img,
            Noise::Poisson {
                scale: 1.0,
                gray: false,
            },
            &mut rng,
        );
        let n = img.data.len() as f64;
        let var = img
            .data
            .iter()
            .zip(&before.data)
            .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
            .sum::<f64>()
            / n;
        let want = before.data.iter().map(|&v| v as f64).sum::<f64>() / n / 256.0;
        assert!((var - want).abs() < 0.1 * want, "{var} vs {want}");
        // a flat image has one level: vals = 1, Poisson(level) - level, variance = level
        let mut flat_img = flat(128, 128, 0.5);
        let level = 128.0 / 255.0;
        add_noise(
            &mut flat_img,
            Noise::Poisson {
                scale: 0.05,
                gray: true,
            },
            &mut rng,
        );
        let n = flat_img.data.len() as f64;
        let var = flat_img
            .data
            .iter()
            .map(|&v| (v as f64 - level).powi(2))
            .sum::<f64>()
            / n;
        let want = 0.05f64.powi(2) * level;
        assert!((var - want).abs() < 0.1 * want, "{var} vs {want}");
    }

    #[test]
    fn poisson_table_has_the_poisson_mean_and_variance() {
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let t = poisson_table(64);
        for level in [0u8, 3, 100, 255] {
            let lam = level as f64 / 255.0 * 64.0;
            let n = 40_000;
            let xs: Vec<f64> = (0..n).map(|_| t.sample(level, &mut rng) as f64).collect();
            let mean = xs.iter().sum::<f64>() / n as f64;
            let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
            assert!(
                (mean - lam).abs() < 0.05 * lam.max(0.2),
                "{level}: mean {mean} vs {lam}"
            );
            assert!(
                (var - lam).abs() < 0.05 * lam.max(0.2),
                "{level}: var {var} vs {lam}"
            );
        }
    }

    #[test]
    fn jpeg_blurs_a_sharp_edge_but_keeps_the_mean() {
        let (w, h) = (64, 64);
        let mut img = flat(w, h, 0.1);
        for y in 0..h {
            for x in 0..w {
                if (x + 3) % 16 >= 8 {
                    img.data[(y * w + x) * 3..(y * w + x) * 3 + 3].fill(0.9);
                }
            }
        }
        let out = jpeg(&img, 30).unwrap();
        assert_eq!((out.width, out.height), (w, h));
        let mean = |i: &Img| i.data.iter().sum::<f32>() / i.data.len() as f32;
        assert!((mean(&out) - mean(&img)).abs() < 0.01);
        let err = img
            .data
            .iter()
            .zip(&out.data)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(err > 0.03, "quality 30 left the edges untouched ({err})");
        let hi = jpeg(&img, 95).unwrap();
        let err_hi = img
            .data
            .iter()
            .zip(&hi.data)
            .map(|(a, b)| (a - b).abs())
            .sum::<f32>();
        let err_lo = img
            .data
            .iter()
            .zip(&out.data)
            .map(|(a, b)| (a - b).abs())
            .sum::<f32>();
        assert!(err_hi < err_lo);
    }

    #[test]
    fn degrade_frame_has_the_lr_size_for_every_preset_and_seed() {
        let mut hr = flat(64, 48, 0.3);
        for (i, v) in hr.data.iter_mut().enumerate() {
            *v = ((i * 37) % 101) as f32 / 100.0;
        }
        for cfg in [DegradeConfig::realesrgan(), DegradeConfig::mild()] {
            for seed in 0..12 {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                let p = DegradeParams::sample(&cfg, &mut rng);
                let lr = degrade_frame(&hr, &p, 16, 12, &mut rng).unwrap();
                assert_eq!((lr.width, lr.height), (16, 12));
                assert!(lr.data.iter().all(|v| (0.0..=1.0).contains(v)));
            }
        }
    }

    #[test]
    fn presets_differ_in_order_and_jpeg() {
        let r = DegradeConfig::realesrgan();
        let m = DegradeConfig::mild();
        assert!(r.second.is_some() && m.second.is_none());
        assert_eq!(m.final_jpeg_range, (60, 95));
        assert!(DegradeConfig::preset("nope").is_err());
        assert_eq!(DegradeConfig::preset("mild").unwrap(), m);
    }
}
