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

/// The train split of the image set at `root`, cropped to `crop` x `crop`, degraded with the
/// `degrade` preset (`realesrgan` or `mild`).
pub fn open(root: &Path, crop: usize, degrade: &str) -> anyhow::Result<Box<dyn ClipSource>> {
    let degrade = match degrade {
        "realesrgan" => DegradeConfig::realesrgan(),
        "mild" => DegradeConfig::mild(),
        other => bail!("unknown degradation preset {other:?} (expected realesrgan or mild)"),
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
