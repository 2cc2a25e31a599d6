//! The training clips of the Debian wallpaper set: pseudo-videos with Real-ESRGAN degradations
//! ([`crate::dataset`]).

use std::path::Path;

use super::source::ClipSource;

pub fn open(root: &Path, crop: usize, degrade: &str) -> anyhow::Result<Box<dyn ClipSource>> {
    let _ = (crop, degrade);
    anyhow::bail!(
        "the image set {} needs the dataset module (scripts/data/fetch-wallpapers.sh); use --synthetic",
        root.display()
    )
}
