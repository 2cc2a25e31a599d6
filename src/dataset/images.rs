//! The training photos in memory: one split list of `scripts/data/fetch-wallpapers.sh` (paths
//! relative to the data root, one per line), every image decoded once and kept as RGB8, downscaled
//! with an area filter so that its short side is at most `max_short_side`. The wallpapers are
//! 1080p-5K while training crops are small; downscaling first also averages away the camera noise
//! and JPEG blocks that would otherwise be part of the "ground truth".

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use image::RgbImage;

use super::ops::{resize_rgb8, ResizeMode};

/// Default short-side cap of [`ImageSet::open`].
pub const DEFAULT_MAX_SHORT_SIDE: u32 = 720;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Heldout,
}

impl Split {
    pub fn file_name(self) -> &'static str {
        match self {
            Split::Train => "train.txt",
            Split::Heldout => "heldout.txt",
        }
    }

    fn other(self) -> Split {
        match self {
            Split::Train => Split::Heldout,
            Split::Heldout => Split::Train,
        }
    }
}

impl std::str::FromStr for Split {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Split> {
        match s {
            "train" => Ok(Split::Train),
            "heldout" | "held-out" => Ok(Split::Heldout),
            other => bail!("unknown split '{other}' (train or heldout)"),
        }
    }
}

/// One decoded image and where it came from.
#[derive(Clone, Debug)]
pub struct SetImage {
    /// Relative to the data root, as written in the split list.
    pub path: PathBuf,
    pub image: RgbImage,
}

#[derive(Clone, Debug)]
pub struct ImageSet {
    pub root: PathBuf,
    pub images: Vec<SetImage>,
}

fn read_list(path: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading the split list {} (run scripts/data/fetch-wallpapers.sh first)",
            path.display()
        )
    })?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let p = PathBuf::from(line);
        if p.is_absolute() || p.components().any(|c| c == std::path::Component::ParentDir) {
            bail!(
                "{}:{}: '{line}' must be a path relative to the data root",
                path.display(),
                n + 1
            );
        }
        out.push(p);
    }
    Ok(out)
}

/// The entries of `root/<split>.txt`, checked against the other split: a file listed in both is an
/// error (held-out images must never be trained on).
pub fn read_split(root: &Path, split: Split) -> Result<Vec<PathBuf>> {
    let list = read_list(&root.join(split.file_name()))?;
    let other_path = root.join(split.other().file_name());
    if other_path.exists() {
        let other: std::collections::HashSet<PathBuf> =
            read_list(&other_path)?.into_iter().collect();
        if let Some(shared) = list.iter().find(|p| other.contains(*p)) {
            bail!(
                "{} is listed in both {} and {}: the training and held-out sets must not share files",
                shared.display(),
                split.file_name(),
                split.other().file_name()
            );
        }
    }
    if list.is_empty() {
        bail!("{} lists no images", root.join(split.file_name()).display());
    }
    Ok(list)
}

/// Decode one image file to RGB8 (alpha composited over black) with its short side capped.
pub fn load_image(path: &Path, max_short_side: u32) -> Result<RgbImage> {
    let dynimg = image::ImageReader::open(path)
        .with_context(|| format!("opening image {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("reading image {}", path.display()))?
        .decode()
        .with_context(|| format!("decoding image {}", path.display()))?;
    let rgb = if dynimg.color().has_alpha() {
        // transparent wallpaper regions hold arbitrary colours; a desktop shows them over a
        // (dark) background, so premultiply
        let rgba = dynimg.to_rgba8();
        let raw = rgba
            .as_raw()
            .chunks_exact(4)
            .flat_map(|p| {
                let a = p[3] as u32;
                [0, 1, 2].map(|c| ((p[c] as u32 * a + 127) / 255) as u8)
            })
            .collect();
        RgbImage::from_raw(rgba.width(), rgba.height(), raw).expect("size")
    } else {
        dynimg.into_rgb8()
    };
    Ok(downscale_short_side(&rgb, max_short_side))
}

/// Area-downscale so that the short side is at most `max_short_side` (aspect ratio kept).
pub fn downscale_short_side(img: &RgbImage, max_short_side: u32) -> RgbImage {
    let (w, h) = (img.width(), img.height());
    let short = w.min(h);
    if short <= max_short_side || max_short_side == 0 {
        return img.clone();
    }
    let f = max_short_side as f64 / short as f64;
    let (nw, nh) = if w <= h {
        (max_short_side, ((h as f64 * f).round() as u32).max(1))
    } else {
        (((w as f64 * f).round() as u32).max(1), max_short_side)
    };
    resize_rgb8(img, nw as usize, nh as usize, ResizeMode::Area).to_rgb8()
}

impl ImageSet {
    /// Open `root`'s `split` with the default short-side cap (720 px).
    pub fn open(root: &Path, split: Split) -> Result<ImageSet> {
        ImageSet::open_with(root, split, DEFAULT_MAX_SHORT_SIDE)
    }

    /// Open `root`'s `split`, decoding on (at most) 2 threads.
    pub fn open_with(root: &Path, split: Split, max_short_side: u32) -> Result<ImageSet> {
        let list = read_split(root, split)?;
        let slots: Vec<Mutex<Option<Result<RgbImage>>>> =
            list.iter().map(|_| Mutex::new(None)).collect();
        let next = AtomicUsize::new(0);
        let threads = 2.min(list.len());
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= list.len() {
                        break;
                    }
                    let r = load_image(&root.join(&list[i]), max_short_side);
                    *slots[i].lock().expect("no panics while holding the slot") = Some(r);
                });
            }
        });
        let mut images = Vec::with_capacity(list.len());
        for (path, slot) in list.into_iter().zip(slots) {
            let image = slot
                .into_inner()
                .expect("no panics while holding the slot")
                .expect("every index was processed")?;
            images.push(SetImage { path, image });
        }
        Ok(ImageSet {
            root: root.to_path_buf(),
            images,
        })
    }

    /// A set from images already in memory (tests, single-image tools).
    pub fn from_images(images: Vec<SetImage>) -> ImageSet {
        ImageSet {
            root: PathBuf::new(),
            images,
        }
    }

    pub fn len(&self) -> usize {
        self.images.len()
    }

    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("turbovsr-dataset-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn split_lists_are_read_and_must_not_share_files() {
        let d = tempdir("split");
        std::fs::write(d.join("train.txt"), "a.png\n\nsub/b.jpg\n").unwrap();
        std::fs::write(d.join("heldout.txt"), "c.png\n").unwrap();
        assert_eq!(
            read_split(&d, Split::Train).unwrap(),
            vec![PathBuf::from("a.png"), PathBuf::from("sub/b.jpg")]
        );
        assert_eq!(
            read_split(&d, Split::Heldout).unwrap(),
            vec![PathBuf::from("c.png")]
        );
        std::fs::write(d.join("heldout.txt"), "c.png\nsub/b.jpg\n").unwrap();
        for split in [Split::Train, Split::Heldout] {
            let err = format!("{:#}", read_split(&d, split).unwrap_err());
            assert!(err.contains("sub/b.jpg") && err.contains("both"), "{err}");
        }
        std::fs::write(d.join("heldout.txt"), "../x.png\n").unwrap();
        let err = format!("{:#}", read_split(&d, Split::Heldout).unwrap_err());
        assert!(err.contains("heldout.txt:1"), "{err}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn open_decodes_and_caps_the_short_side_and_names_bad_files() {
        let d = tempdir("open");
        let big = RgbImage::from_fn(300, 200, |x, y| {
            image::Rgb([(2 * x % 256) as u8, (y % 256) as u8, 7])
        });
        big.save(d.join("big.png")).unwrap();
        RgbImage::from_pixel(50, 80, image::Rgb([10, 20, 30]))
            .save(d.join("small.png"))
            .unwrap();
        std::fs::write(d.join("train.txt"), "big.png\nsmall.png\n").unwrap();
        std::fs::write(d.join("heldout.txt"), "missing.png\n").unwrap();
        let set = ImageSet::open_with(&d, Split::Train, 100).unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(set.images[0].path, PathBuf::from("big.png"));
        assert_eq!(set.images[0].image.dimensions(), (150, 100));
        // area filter: a 2x2 block mean of the x ramp
        assert_eq!(set.images[0].image.get_pixel(3, 0)[0], 13); // mean of 12 and 14
        assert_eq!(set.images[1].image.dimensions(), (50, 80));
        assert_eq!(set.images[1].image.get_pixel(0, 0).0, [10, 20, 30]);
        let err = format!("{:#}", ImageSet::open(&d, Split::Heldout).unwrap_err());
        assert!(err.contains("missing.png"), "{err}");
        std::fs::write(d.join("bad.png"), b"not an image").unwrap();
        std::fs::write(d.join("heldout.txt"), "bad.png\n").unwrap();
        let err = format!("{:#}", ImageSet::open(&d, Split::Heldout).unwrap_err());
        assert!(err.contains("bad.png"), "{err}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
