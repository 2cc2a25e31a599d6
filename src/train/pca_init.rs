//! A principal-component start for the small VAE (`train vae --init pca`).
//!
//! Trained from random weights, the small VAE needs thousands of steps to learn what a linear
//! map of each 4x4 patch already does well (a run from He-normal weights was at 0.096 L1 + MSE
//! after 600 steps, about 24 dB). This sets the weights so that, before any step, the encoder
//! computes the patch's `K` leading principal components (K = latent channels) and the decoder
//! maps them back, through LTX's blocks as they are:
//!
//! - every resnet's second convolution is zero, so each resnet is the identity;
//! - the encoder's `conv_in` (centre tap) writes each component twice, `1 + s_k` and `1 - s_k`
//!   with `s_k` of standard deviation [`SIGNAL_STD`]: the per-position RMS norm then divides by
//!   `sqrt(1 + mean s^2)`, a second-order change only (the pairs cancel the first-order one),
//!   and SiLU around 1 is close to linear;
//! - `conv_out` takes `silu(1 + s) - silu(1 - s) = 2 silu'(1) s + O(s^3)` (the quadratic terms
//!   cancel too) and scales it to a unit-variance latent;
//! - the decoder does the same in reverse, its `conv_out` multiplying by the components and
//!   adding the patch mean.
//!
//! Training then starts from the principal-component reconstruction instead of noise (the
//! remaining error is the discarded components plus the small nonlinear terms above).

use candle_core::{DType, Device, Tensor};

use super::params;
use super::source::{step_seed, ClipSource};
use super::vae::{vae_batch, TrainableVae};
use crate::model::vae::encoder::patchify;

/// Standard deviation of a principal component inside the network (relative to the offset 1).
pub const SIGNAL_STD: f64 = 0.1;

/// `silu'(1) = sigmoid(1) (1 + 1 - sigmoid(1))`.
fn silu_slope_at_one() -> f64 {
    let s = 1.0 / (1.0 + (-1f64).exp());
    s * (2.0 - s)
}

/// Eigenvalues (descending) and eigenvectors (as rows, same order) of the symmetric matrix `a`
/// (`n x n`, row-major), by cyclic Jacobi rotations.
pub fn symmetric_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<Vec<f64>>) {
    let mut m = a.to_vec();
    let mut v = vec![0f64; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| m[i * n + j] * m[i * n + j])
            .sum();
        let scale: f64 = (0..n).map(|i| m[i * n + i] * m[i * n + i]).sum::<f64>();
        if off <= 1e-24 * scale.max(1e-300) {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = m[p * n + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (m[q * n + q] - m[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (mkp, mkq) = (m[k * n + p], m[k * n + q]);
                    m[k * n + p] = c * mkp - s * mkq;
                    m[k * n + q] = s * mkp + c * mkq;
                }
                for k in 0..n {
                    let (mpk, mqk) = (m[p * n + k], m[q * n + k]);
                    m[p * n + k] = c * mpk - s * mqk;
                    m[q * n + k] = s * mpk + c * mqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| m[j * n + j].total_cmp(&m[i * n + i]));
    let values = order.iter().map(|&i| m[i * n + i]).collect();
    let vectors = order
        .iter()
        .map(|&i| (0..n).map(|k| v[k * n + i]).collect())
        .collect();
    (values, vectors)
}

/// Mean and covariance of the patch vectors (the encoder's patchify channels) of `clips`
/// training samples (HR and degraded, as the VAE is trained on).
pub fn patch_statistics(
    vae: &TrainableVae,
    source: &dyn ClipSource,
    clips: usize,
    seed: u64,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let p = vae.config.patch_size;
    let mut rows: Vec<f32> = Vec::new();
    let mut dim = 0;
    for i in 0..clips {
        let x = vae_batch(source, 1, 1, 0.3, step_seed(seed, i))?;
        let z = patchify(&x, p, vae.config.patch_size_t)?; // (1, d, 1, h, w)
        dim = z.dim(1)?;
        let z = z.reshape((dim, ()))?.t()?.contiguous()?;
        rows.extend(z.flatten_all()?.to_vec1::<f32>()?);
    }
    let n = rows.len() / dim.max(1);
    if n < 2 * dim {
        anyhow::bail!("PCA init: {n} patches are too few for {dim} dimensions");
    }
    let mut mean = vec![0f64; dim];
    for r in rows.chunks(dim) {
        for (m, &v) in mean.iter_mut().zip(r) {
            *m += v as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let mut cov = vec![0f64; dim * dim];
    for r in rows.chunks(dim) {
        let d: Vec<f64> = r.iter().zip(&mean).map(|(&v, m)| v as f64 - m).collect();
        for i in 0..dim {
            for j in i..dim {
                cov[i * dim + j] += d[i] * d[j];
            }
        }
    }
    for i in 0..dim {
        for j in i..dim {
            let c = cov[i * dim + j] / (n - 1) as f64;
            cov[i * dim + j] = c;
            cov[j * dim + i] = c;
        }
    }
    Ok((mean, cov))
}

/// Sets the VAE's weights to the principal-component autoencoder described in the module
/// documentation. Needs a config whose hidden width is twice the latent channels, every
/// convolution 3x3x3, no strided block.
pub fn pca_init(vae: &TrainableVae, source: &dyn ClipSource, seed: u64) -> anyhow::Result<()> {
    let cfg = &vae.config;
    let k = cfg.latent_channels;
    let width = cfg.block_out_channels[0];
    if cfg.block_out_channels.iter().any(|&c| c != 2 * k)
        || cfg.decoder_block_out_channels.iter().any(|&c| c != 2 * k)
        || cfg.spatio_temporal_scaling.iter().any(|&s| s)
        || cfg.decoder_spatio_temporal_scaling.iter().any(|&s| s)
    {
        anyhow::bail!(
            "PCA init needs every block {} channels wide (twice the {k} latent channels) and \
             no down- or upsampling; this config has {:?} / {:?}",
            2 * k,
            cfg.block_out_channels,
            cfg.decoder_block_out_channels
        );
    }
    let (mean, cov) = patch_statistics(vae, source, 64, seed)?;
    let d = mean.len();
    if k > d {
        anyhow::bail!("PCA init: {k} latent channels exceed the {d} values of a patch");
    }
    let (values, vectors) = symmetric_eigen(&cov, d);
    let slope = silu_slope_at_one();
    let gain = 1.0 / (2.0 * slope * SIGNAL_STD);
    let std: Vec<f64> = values[..k].iter().map(|&l| l.max(1e-10).sqrt()).collect();

    // weights [out, in, kt, kh, kw]: only the centre tap of each kernel is set
    let centre = |causal: bool| if causal { 2 } else { 1 };
    let conv = |out: usize, inp: usize, t: usize, f: &dyn Fn(usize, usize) -> f64| {
        let mut w = vec![0f32; out * inp * 27];
        for o in 0..out {
            for i in 0..inp {
                w[((o * inp + i) * 3 + t) * 9 + 4] = f(o, i) as f32;
            }
        }
        Tensor::from_vec(w, (out, inp, 3, 3, 3), &Device::Cpu)
    };
    let vars = vae.trained_vars()?;
    let set = |name: &str, value: Tensor| -> anyhow::Result<()> {
        let var = params::named(&vars, name, "PCA init: the VAE")?;
        if var.shape() != value.shape() {
            anyhow::bail!(
                "PCA init: {name} has shape {:?}, expected {:?}",
                var.shape(),
                value.shape()
            );
        }
        var.set(&value.to_dtype(DType::F32)?)?;
        Ok(())
    };
    let vec1 = |v: Vec<f64>| {
        let n = v.len();
        Tensor::from_vec(v.into_iter().map(|x| x as f32).collect(), n, &Device::Cpu)
    };
    // encoder: s_k = a_k u_k . (x - mean), a_k = SIGNAL_STD / std_k; channels k and k + K
    let a: Vec<f64> = std.iter().map(|s| SIGNAL_STD / s).collect();
    let proj_mean: Vec<f64> = (0..k)
        .map(|c| vectors[c].iter().zip(&mean).map(|(u, m)| u * m).sum())
        .collect();
    let enc_t = centre(cfg.encoder_causal);
    set(
        "encoder.conv_in.conv.weight",
        conv(width, d, enc_t, &|o, i| {
            let (c, sign) = if o < k { (o, 1.0) } else { (o - k, -1.0) };
            sign * a[c] * vectors[c][i]
        })?,
    )?;
    set(
        "encoder.conv_in.conv.bias",
        vec1(
            (0..width)
                .map(|o| {
                    let (c, sign) = if o < k { (o, 1.0) } else { (o - k, -1.0) };
                    1.0 - sign * a[c] * proj_mean[c]
                })
                .collect(),
        )?,
    )?;
    let out_rows =
        params::named(&vars, "encoder.conv_out.conv.weight", "PCA init: the VAE")?.dims()[0];
    set(
        "encoder.conv_out.conv.weight",
        conv(out_rows, width, enc_t, &|o, i| {
            if o >= k {
                0.0
            } else if i == o {
                gain
            } else if i == o + k {
                -gain
            } else {
                0.0
            }
        })?,
    )?;
    set("encoder.conv_out.conv.bias", vec1(vec![0.0; out_rows])?)?;
    // decoder: 1 +- SIGNAL_STD z_k, then mean + sum_k u_k std_k z_k
    let dec_t = centre(cfg.decoder_causal);
    set(
        "decoder.conv_in.conv.weight",
        conv(width, k, dec_t, &|o, i| {
            if o == i {
                SIGNAL_STD
            } else if o == i + k {
                -SIGNAL_STD
            } else {
                0.0
            }
        })?,
    )?;
    set("decoder.conv_in.conv.bias", vec1(vec![1.0; width])?)?;
    set(
        "decoder.conv_out.conv.weight",
        conv(d, width, dec_t, &|o, i| {
            let (c, sign) = if i < k { (i, 1.0) } else { (i - k, -1.0) };
            sign * gain * std[c] * vectors[c][o]
        })?,
    )?;
    set("decoder.conv_out.conv.bias", vec1(mean.clone())?)?;
    // every resnet the identity
    for (name, var) in &vars {
        if name.contains(".conv2.conv.") {
            var.set(&var.zeros_like()?)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jacobi_diagonalizes_a_symmetric_matrix() {
        // A = Q diag(5, 2, 0.5) Q^T for a rotation Q
        let (c, s) = (0.6f64, 0.8f64);
        let q = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]];
        let l = [2.0, 5.0, 0.5];
        let mut a = vec![0f64; 9];
        for i in 0..3 {
            for j in 0..3 {
                a[i * 3 + j] = (0..3).map(|m| q[i][m] * l[m] * q[j][m]).sum();
            }
        }
        let (values, vectors) = symmetric_eigen(&a, 3);
        for (got, want) in values.iter().zip([5.0, 2.0, 0.5]) {
            assert!((got - want).abs() < 1e-10, "{values:?}");
        }
        // A v = lambda v for each pair
        for (lambda, v) in values.iter().zip(&vectors) {
            for i in 0..3 {
                let av: f64 = (0..3).map(|j| a[i * 3 + j] * v[j]).sum();
                assert!((av - lambda * v[i]).abs() < 1e-10);
            }
        }
    }

    /// Before any training step the principal-component start reconstructs clips it has not
    /// seen, and still does after the export to f16 (the weights the element loads).
    #[test]
    fn pca_start_reconstructs_and_survives_f16_export() -> anyhow::Result<()> {
        use crate::model::vae::AutoencoderKlLtxVideo;
        use crate::train::source::SyntheticSource;
        use crate::train::vae::{export_vae, reconstruction_psnr, small_vae_config_json};
        let src = SyntheticSource {
            height: 32,
            width: 32,
            scale: 4,
        };
        let vae = TrainableVae::new(&small_vae_config_json(), 0)?;
        let before = reconstruction_psnr(&vae.vae, &src, 2, 9, 99)?;
        pca_init(&vae, &src, 1)?;
        let after = reconstruction_psnr(&vae.vae, &src, 2, 9, 99)?;
        assert!(
            before < 20.0 && after > 35.0,
            "{before:.2} dB -> {after:.2} dB"
        );
        let dir = std::env::temp_dir().join(format!("turbovsr-pca-{}", std::process::id()));
        export_vae(&vae, &src, &dir, DType::F16)?;
        let loaded = AutoencoderKlLtxVideo::load(&dir, &Device::Cpu, DType::F32)?;
        let exported = reconstruction_psnr(&loaded, &src, 2, 9, 99)?;
        std::fs::remove_dir_all(&dir)?;
        assert!(
            exported > after - 3.0,
            "{after:.2} dB, exported {exported:.2} dB"
        );
        Ok(())
    }
}
