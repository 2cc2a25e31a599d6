//! Latents and the tokens the sampler and the transformer see: a latent video (b, c, t, h, w)
//! cut into patches of (patch_t, patch, patch), frame-major.

use candle_core::{Result, Tensor};

/// `(b, c, t, h, w)` latents -> `(b, t/pt * h/p * w/p, c*pt*p*p)` tokens, diffusers'
/// `LTXPipeline._pack_latents` (frame-major token order, channel-major within a patch).
pub fn pack_latents(z: &Tensor, patch: usize, patch_t: usize) -> Result<Tensor> {
    let (b, c, t, h, w) = z.dims5()?;
    if t % patch_t != 0 || h % patch != 0 || w % patch != 0 {
        candle_core::bail!(
            "latent (t, h, w) = ({t}, {h}, {w}) is not divisible by the patch ({patch_t}, {patch}, {patch})"
        );
    }
    let (tt, hh, ww) = (t / patch_t, h / patch, w / patch);
    if patch == 1 && patch_t == 1 {
        // (b, c, t, h, w) -> (b, t*h*w, c)
        return z.reshape((b, c, t * h * w))?.transpose(1, 2)?.contiguous();
    }
    // (b, c, tt, pt, hh, p, ww, p) -> (b, tt, hh, ww, c, pt, p, p)
    z.reshape(vec![b, c, tt, patch_t, hh, patch, ww, patch])?
        .permute(vec![0, 2, 4, 6, 1, 3, 5, 7])?
        .contiguous()?
        .reshape((b, tt * hh * ww, c * patch_t * patch * patch))
}

/// Inverse of [`pack_latents`] for a latent grid (t, h, w) (in latents, before patching).
pub fn unpack_latents(
    x: &Tensor,
    (t, h, w): (usize, usize, usize),
    patch: usize,
    patch_t: usize,
) -> Result<Tensor> {
    let (b, n, cp) = x.dims3()?;
    let (tt, hh, ww) = (t / patch_t, h / patch, w / patch);
    let c = cp / (patch_t * patch * patch);
    if n != tt * hh * ww || c * patch_t * patch * patch != cp {
        candle_core::bail!(
            "cannot unpack tokens {:?} to a latent of (t, h, w) = ({t}, {h}, {w})",
            x.dims()
        );
    }
    if patch == 1 && patch_t == 1 {
        return x.transpose(1, 2)?.contiguous()?.reshape((b, c, t, h, w));
    }
    x.reshape(vec![b, tt, hh, ww, c, patch_t, patch, patch])?
        .permute(vec![0, 4, 1, 5, 2, 6, 3, 7])?
        .contiguous()?
        .reshape((b, c, t, h, w))
}
