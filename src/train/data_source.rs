//! The training clips of the Debian wallpaper set (`scripts/data/fetch-wallpapers.sh`, train
//! split only): pseudo-videos by smooth random affine motion with Real-ESRGAN degradations
//! ([`crate::dataset`], supplementary §6).

use std::path::Path;

use anyhow::bail;
use candle_core::Tensor;

use super::source::ClipSource;
use crate::dataset::{make_clip, ClipSpec, DegradeConfig, ImageSet, Split};

pub struct WallpaperSource {
    set: ImageSet,
    spec: ClipSpec,
}

impl ClipSource for WallpaperSource {
    fn clip(&self, frames: usize, seed: u64) -> anyhow::Result<(Tensor, Tensor)> {
        let spec = ClipSpec {
            frames,
            ..self.spec.clone()
        };
        let clip = make_clip(&self.set, &spec, seed)?;
        Ok((clip.hr, clip.lr))
    }

    fn scale(&self) -> usize {
        self.spec.scale
    }

    fn size(&self) -> (usize, usize) {
        (self.spec.hr_height, self.spec.hr_width)
    }
}

/// Clips from two sources by the parity of their seed: a batch's clips (consecutive seeds a
/// fixed odd stride apart) alternate between them.
pub struct MixedSource {
    pub even: Box<dyn ClipSource>,
    pub odd: Box<dyn ClipSource>,
}

impl ClipSource for MixedSource {
    fn clip(&self, frames: usize, seed: u64) -> anyhow::Result<(Tensor, Tensor)> {
        if seed % 2 == 0 {
            self.even.clip(frames, seed)
        } else {
            self.odd.clip(frames, seed)
        }
    }

    fn scale(&self) -> usize {
        self.even.scale()
    }

    fn size(&self) -> (usize, usize) {
        self.even.size()
    }
}

/// The train split of the image set at `root`, cropped to `crop` x `crop`, degraded with the
/// `degrade` preset (`realesrgan` or `mild`), or `mixed`: half the clips each.
pub fn open(root: &Path, crop: usize, degrade: &str) -> anyhow::Result<Box<dyn ClipSource>> {
    let degrade = match degrade {
        "realesrgan" => DegradeConfig::realesrgan(),
        "mild" => DegradeConfig::mild(),
        "mixed" => {
            return Ok(Box::new(MixedSource {
                even: open(root, crop, "realesrgan")?,
                odd: open(root, crop, "mild")?,
            }))
        }
        other => {
            bail!("unknown degradation preset {other:?} (expected realesrgan, mild or mixed)")
        }
    };
    let set = ImageSet::open(root, Split::Train).map_err(|e| {
        e.context(format!(
            "opening the training images at {} (run scripts/data/fetch-wallpapers.sh)",
            root.display()
        ))
    })?;
    Ok(Box::new(WallpaperSource {
        set,
        spec: ClipSpec::new(1, crop, crop, 4, degrade),
    }))
}
