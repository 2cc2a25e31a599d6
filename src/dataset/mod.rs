//! Training data for issue 11: photos from the Debian wallpaper packages
//! (`scripts/data/fetch-wallpapers.sh`, docs/DATASET.md), turned into (HR, LR) clip pairs: a
//! pseudo-video by smooth random affine motion over a still ([`motion`], TurboVSR supplementary
//! §6), degraded to 1/scale by the Real-ESRGAN second-order model ([`degrade`]).
//!
//! Everything is driven by one seed: the same `(set, spec, seed)` gives bit-identical clips.

pub mod cli;
pub mod degrade;
pub mod images;
pub mod motion;
pub mod ops;

use std::path::PathBuf;

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use image::RgbImage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use degrade::DegradeConfig;
pub use images::{ImageSet, SetImage, Split};
pub use motion::MotionConfig;
use ops::Img;

/// What clip to make.
#[derive(Clone, Debug, PartialEq)]
pub struct ClipSpec {
    pub frames: usize,
    pub hr_height: usize,
    pub hr_width: usize,
    /// LR = HR / scale; both HR sizes must be multiples of it.
    pub scale: usize,
    pub degrade: DegradeConfig,
    pub motion: MotionConfig,
}

impl ClipSpec {
    /// A spec with the default camera motion.
    pub fn new(
        frames: usize,
        hr_height: usize,
        hr_width: usize,
        scale: usize,
        degrade: DegradeConfig,
    ) -> ClipSpec {
        ClipSpec {
            frames,
            hr_height,
            hr_width,
            scale,
            degrade,
            motion: MotionConfig::default(),
        }
    }

    fn check(&self) -> Result<()> {
        if self.frames == 0 || self.hr_height == 0 || self.hr_width == 0 || self.scale == 0 {
            bail!("clip spec: frames, height, width and scale must be positive ({self:?})");
        }
        if self.hr_height % self.scale != 0 || self.hr_width % self.scale != 0 {
            bail!(
                "clip spec: HR size {}x{} is not a multiple of the scale {}",
                self.hr_width,
                self.hr_height,
                self.scale
            );
        }
        Ok(())
    }
}

/// One training pair, CPU f32 RGB in [0, 1] (8-bit values: both are what an 8-bit video holds).
#[derive(Clone, Debug)]
pub struct Clip {
    /// `[3, F, H, W]`
    pub hr: Tensor,
    /// `[3, F, H / scale, W / scale]`
    pub lr: Tensor,
    /// The source image, relative to the data root (empty for [`make_clip_from`]).
    pub source: PathBuf,
}

/// HR and LR frames of a clip as images (what [`make_clip`] packs into tensors).
pub struct ClipFrames {
    pub hr: Vec<Img>,
    pub lr: Vec<Img>,
}

/// Frames of a clip from one image: motion path, crop, optional horizontal flip, degradation.
pub fn make_frames_from(image: &RgbImage, spec: &ClipSpec, seed: u64) -> Result<ClipFrames> {
    spec.check()?;
    let (sw, sh) = (image.width() as usize, image.height() as usize);
    let (w, h) = (spec.hr_width, spec.hr_height);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let path = motion::sample_motion(&mut rng, spec.frames, &spec.motion);
    let Some((origin, path)) = motion::place(&mut rng, &path, sw, sh, w, h) else {
        bail!("a {w}x{h} crop does not fit in a {sw}x{sh} image");
    };
    // Real-ESRGAN flips its training crops horizontally half of the time
    let flip = rng.random::<bool>();
    let params = degrade::DegradeParams::sample(&spec.degrade, &mut rng);
    let (lw, lh) = (w / spec.scale, h / spec.scale);
    let mut hr = Vec::with_capacity(spec.frames);
    let mut lr = Vec::with_capacity(spec.frames);
    for m in &path {
        let mut f = motion::warp(image, origin, m, w, h);
        if flip {
            for row in f.data.chunks_exact_mut(w * 3) {
                for x in 0..w / 2 {
                    for c in 0..3 {
                        row.swap(x * 3 + c, (w - 1 - x) * 3 + c);
                    }
                }
            }
        }
        f.quantize();
        lr.push(degrade::degrade_frame(&f, &params, lw, lh, &mut rng)?);
        hr.push(f);
    }
    Ok(ClipFrames { hr, lr })
}

/// `[3, F, H, W]` from F interleaved RGB frames of one size.
pub fn frames_to_tensor(frames: &[Img]) -> Result<Tensor> {
    let (w, h) = (frames[0].width, frames[0].height);
    let f = frames.len();
    let mut data = vec![0.0f32; 3 * f * h * w];
    for (k, img) in frames.iter().enumerate() {
        for (p, px) in img.data.chunks_exact(3).enumerate() {
            for c in 0..3 {
                data[(c * f + k) * h * w + p] = px[c];
            }
        }
    }
    Ok(Tensor::from_vec(data, (3, f, h, w), &Device::Cpu)?)
}

/// A clip from one given image (its `source` is left empty).
pub fn make_clip_from(image: &RgbImage, spec: &ClipSpec, seed: u64) -> Result<Clip> {
    let frames = make_frames_from(image, spec, seed)?;
    Ok(Clip {
        hr: frames_to_tensor(&frames.hr)?,
        lr: frames_to_tensor(&frames.lr)?,
        source: PathBuf::new(),
    })
}

/// The image index and per-image seed `make_clip` uses for `seed`.
pub fn pick(set: &ImageSet, seed: u64) -> Result<(usize, u64)> {
    if set.is_empty() {
        bail!("the image set is empty");
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let i = rng.random_range(0..set.len());
    Ok((i, rng.random::<u64>()))
}

/// A random clip of `set`: the image, crop, motion and degradation all drawn from `seed`.
pub fn make_clip(set: &ImageSet, spec: &ClipSpec, seed: u64) -> Result<Clip> {
    let (i, sub) = pick(set, seed)?;
    let img = &set.images[i];
    let mut clip = make_clip_from(&img.image, spec, sub)
        .map_err(|e| e.context(format!("making a clip from {}", img.path.display())))?;
    clip.source = img.path.clone();
    Ok(clip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texture(w: u32, h: u32, phase: f32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let f = (x as f32 * 0.3 + phase).sin() * (y as f32 * 0.17).cos();
            let v = ((f + 1.0) * 127.0) as u8;
            image::Rgb([v, (x * 3 % 256) as u8, (y * 5 % 256) as u8])
        })
    }

    fn set() -> ImageSet {
        ImageSet::from_images(vec![
            SetImage {
                path: "a.png".into(),
                image: texture(160, 120, 0.0),
            },
            SetImage {
                path: "b.png".into(),
                image: texture(140, 150, 1.3),
            },
        ])
    }

    fn same(a: &Tensor, b: &Tensor) -> bool {
        a.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            == b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    #[test]
    fn clips_are_deterministic_and_shaped() {
        let set = set();
        for degrade in [DegradeConfig::realesrgan(), DegradeConfig::mild()] {
            let spec = ClipSpec::new(3, 48, 64, 4, degrade);
            let a = make_clip(&set, &spec, 42).unwrap();
            let b = make_clip(&set, &spec, 42).unwrap();
            assert_eq!(a.hr.dims(), &[3, 3, 48, 64]);
            assert_eq!(a.lr.dims(), &[3, 3, 12, 16]);
            assert!(same(&a.hr, &b.hr) && same(&a.lr, &b.lr));
            assert_eq!(a.source, b.source);
            let c = make_clip(&set, &spec, 43).unwrap();
            assert!(!same(&a.lr, &c.lr));
            let v = a.lr.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(v.iter().all(|x| (0.0..=1.0).contains(x)));
        }
    }

    #[test]
    fn a_still_clip_is_a_crop_and_the_frames_share_the_degradation() {
        let img = texture(100, 90, 0.5);
        let mut spec = ClipSpec::new(1, 32, 32, 4, DegradeConfig::mild());
        let still = make_frames_from(&img, &spec, 7).unwrap();
        assert_eq!((still.hr.len(), still.lr.len()), (1, 1));
        // the HR frame is a crop (maybe mirrored) of the source: each row exists in the image
        let row0: Vec<u8> = still.hr[0].data[..32 * 3]
            .iter()
            .map(|&v| ops::to_u8(v))
            .collect();
        let found = (0..90).any(|y| {
            (0..=68).any(|x| {
                let fwd: Vec<u8> = (0..32).flat_map(|i| img.get_pixel(x + i, y).0).collect();
                let rev: Vec<u8> = (0..32)
                    .rev()
                    .flat_map(|i| img.get_pixel(x + i, y).0)
                    .collect();
                fwd == row0 || rev == row0
            })
        });
        assert!(found);
        // zero motion: every frame has the same HR; with the same parameters, their LRs differ
        // only by the per-frame noise, so they stay close
        spec.frames = 4;
        spec.motion = MotionConfig {
            max_shift: 0.0,
            max_rotation_deg: 0.0,
            max_zoom: 0.0,
            max_accel: 0.0,
        };
        let clip = make_frames_from(&img, &spec, 9).unwrap();
        for k in 1..4 {
            assert_eq!(clip.hr[k], clip.hr[0]);
            let mad = clip.lr[k]
                .data
                .iter()
                .zip(&clip.lr[0].data)
                .map(|(a, b)| (a - b).abs())
                .sum::<f32>()
                / clip.lr[0].data.len() as f32;
            assert!(mad < 0.1, "frame {k}: {mad}");
            // fresh noise per frame
            assert_ne!(clip.lr[k], clip.lr[0]);
        }
    }

    #[test]
    fn bad_specs_and_small_images_are_errors() {
        let set = set();
        let spec = ClipSpec::new(2, 50, 64, 4, DegradeConfig::mild());
        assert!(format!("{:#}", make_clip(&set, &spec, 1).unwrap_err()).contains("multiple"));
        let spec = ClipSpec::new(2, 400, 400, 4, DegradeConfig::mild());
        let err = format!("{:#}", make_clip(&set, &spec, 1).unwrap_err());
        assert!(
            err.contains("does not fit") && err.contains(".png"),
            "{err}"
        );
        assert!(make_clip(&ImageSet::from_images(vec![]), &spec, 1).is_err());
    }
}
