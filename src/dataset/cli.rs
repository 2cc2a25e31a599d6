//! `turbovsr data ...`: the held-out evaluation set on disk (the folder `turbovsr eval` reads) and
//! the image counts of a data root.
//!
//! Eval-set folder: `OUT/manifest.json` and `OUT/clip_XXX/{hr,lr}_YYY.png` (RGB8). Each clip is
//! `make_clip_from(image, spec, seed)` with the manifest's source and seed, so it can be rebuilt.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::images::{read_split, ImageSet, Split, DEFAULT_MAX_SHORT_SIDE};
use super::{make_clip, make_frames_from, ClipSpec, DegradeConfig};

#[derive(Args, Debug)]
pub struct DataArgs {
    #[command(subcommand)]
    pub command: DataCommand,
}

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Write a fixed evaluation set (HR and degraded LR PNG clips plus manifest.json).
    EvalSet(EvalSetArgs),
    /// Print the image counts of each split (and optionally time clip generation).
    Stats(StatsArgs),
}

#[derive(Args, Debug)]
pub struct EvalSetArgs {
    /// Data root (holding train.txt / heldout.txt).
    #[arg(long, default_value = "data/wallpapers")]
    pub root: PathBuf,
    /// train or heldout.
    #[arg(long, default_value = "heldout")]
    pub split: Split,
    /// Output folder (created; must not already hold a manifest.json).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 9)]
    pub frames: usize,
    /// HR height (a multiple of the scale).
    #[arg(long, default_value_t = 256)]
    pub height: usize,
    /// HR width (a multiple of the scale).
    #[arg(long, default_value_t = 256)]
    pub width: usize,
    #[arg(long, default_value_t = 4)]
    pub scale: usize,
    #[arg(long, default_value_t = 2)]
    pub clips_per_image: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Degradation preset: realesrgan or mild.
    #[arg(long, default_value = "realesrgan")]
    pub preset: String,
    /// Short-side cap applied to the photos when loading them.
    #[arg(long, default_value_t = DEFAULT_MAX_SHORT_SIDE)]
    pub max_short_side: u32,
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    #[arg(long, default_value = "data/wallpapers")]
    pub root: PathBuf,
    /// Also load the training split and time make_clip (9 frames, 128x128, both presets).
    #[arg(long)]
    pub bench: bool,
}

pub fn run(args: &DataArgs) -> Result<()> {
    match &args.command {
        DataCommand::EvalSet(a) => eval_set(a),
        DataCommand::Stats(a) => stats(a),
    }
}

fn split_name(split: Split) -> &'static str {
    match split {
        Split::Train => "train",
        Split::Heldout => "heldout",
    }
}

pub fn eval_set(a: &EvalSetArgs) -> Result<()> {
    let degrade = DegradeConfig::preset(&a.preset)?;
    let spec = ClipSpec::new(a.frames, a.height, a.width, a.scale, degrade);
    if a.clips_per_image == 0 {
        bail!("--clips-per-image must be at least 1");
    }
    if a.out.join("manifest.json").exists() {
        bail!(
            "{} already holds an eval set (manifest.json); choose another --out",
            a.out.display()
        );
    }
    let set = ImageSet::open_with(&a.root, a.split, a.max_short_side)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut seeds = ChaCha8Rng::seed_from_u64(a.seed);
    let mut clips = Vec::new();
    for img in &set.images {
        for _ in 0..a.clips_per_image {
            let seed = seeds.random::<u64>();
            let name = format!("clip_{:03}", clips.len());
            let frames = make_frames_from(&img.image, &spec, seed)
                .with_context(|| format!("making {name} from {}", img.path.display()))?;
            let dir = a.out.join(&name);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for (k, (hr, lr)) in frames.hr.iter().zip(&frames.lr).enumerate() {
                save_png(&hr.to_rgb8(), &dir.join(format!("hr_{k:03}.png")))?;
                save_png(&lr.to_rgb8(), &dir.join(format!("lr_{k:03}.png")))?;
            }
            clips.push(serde_json::json!({
                "name": name,
                "source": img.path.to_string_lossy(),
                "seed": seed,
            }));
        }
    }
    let manifest = serde_json::json!({
        "scale": a.scale,
        "frames": a.frames,
        "height": a.height,
        "width": a.width,
        "split": split_name(a.split),
        "root": a.root.to_string_lossy(),
        "seed": a.seed,
        "max_short_side": a.max_short_side,
        "clips": clips,
        "degradation": spec.degrade,
        "motion": spec.motion,
    });
    let path = a.out.join("manifest.json");
    std::fs::write(&path, serde_json::to_string_pretty(&manifest)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    println!(
        "wrote {} clips of {} frames ({}x{} HR, x{}) from {} {} images to {}",
        clips.len(),
        a.frames,
        a.width,
        a.height,
        a.scale,
        set.len(),
        split_name(a.split),
        a.out.display()
    );
    Ok(())
}

fn save_png(img: &image::RgbImage, path: &Path) -> Result<()> {
    img.save_with_format(path, image::ImageFormat::Png)
        .with_context(|| format!("writing {}", path.display()))
}

pub fn stats(a: &StatsArgs) -> Result<()> {
    for split in [Split::Train, Split::Heldout] {
        let list = read_split(&a.root, split)?;
        println!("{:8} {:4} images", split_name(split), list.len());
    }
    if a.bench {
        let t = Instant::now();
        let set = ImageSet::open(&a.root, Split::Train)?;
        println!(
            "loaded {} training images (short side <= {DEFAULT_MAX_SHORT_SIDE}) in {:.1} s",
            set.len(),
            t.elapsed().as_secs_f64()
        );
        for degrade in [DegradeConfig::realesrgan(), DegradeConfig::mild()] {
            let name = degrade.name.clone();
            let spec = ClipSpec::new(9, 128, 128, 4, degrade);
            let n = 50;
            let mut times = Vec::with_capacity(n);
            for seed in 0..n as u64 {
                let t = Instant::now();
                make_clip(&set, &spec, seed)?;
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            times.sort_by(f64::total_cmp);
            let mean = times.iter().sum::<f64>() / n as f64;
            println!(
                "make_clip 9x128x128 {name:10}: mean {mean:.1} ms, median {:.1} ms, max {:.1} ms ({n} clips, 1 thread)",
                times[n / 2],
                times[n - 1]
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::images::load_image;

    #[test]
    fn eval_set_writes_the_folder_format_and_clips_rebuild_from_the_manifest() {
        let root = std::env::temp_dir().join(format!("turbovsr-evalset-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        for (name, phase) in [("a.png", 0u32), ("b.png", 50)] {
            image::RgbImage::from_fn(96, 80, |x, y| {
                image::Rgb([((x * 5 + phase) % 256) as u8, (y * 3 % 256) as u8, 90])
            })
            .save(root.join(name))
            .unwrap();
        }
        std::fs::write(root.join("train.txt"), "a.png\n").unwrap();
        std::fs::write(root.join("heldout.txt"), "b.png\n").unwrap();
        let out = root.join("eval");
        let args = EvalSetArgs {
            root: root.clone(),
            split: Split::Heldout,
            out: out.clone(),
            frames: 2,
            height: 32,
            width: 48,
            scale: 4,
            clips_per_image: 2,
            seed: 3,
            preset: "mild".into(),
            max_short_side: DEFAULT_MAX_SHORT_SIDE,
        };
        eval_set(&args).unwrap();
        let m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap())
                .unwrap();
        assert_eq!(m["scale"], 4);
        assert_eq!(m["frames"], 2);
        assert_eq!(m["degradation"]["name"], "mild");
        let clips = m["clips"].as_array().unwrap();
        assert_eq!(clips.len(), 2);
        assert_eq!(clips[1]["name"], "clip_001");
        assert_eq!(clips[0]["source"], "b.png");
        // the manifest's seed rebuilds the clip exactly
        let spec = ClipSpec::new(2, 32, 48, 4, DegradeConfig::mild());
        let img = load_image(&root.join("b.png"), DEFAULT_MAX_SHORT_SIDE).unwrap();
        let seed = clips[1]["seed"].as_u64().unwrap();
        let frames = make_frames_from(&img, &spec, seed).unwrap();
        for k in 0..2 {
            let hr = image::open(out.join(format!("clip_001/hr_{k:03}.png")))
                .unwrap()
                .to_rgb8();
            let lr = image::open(out.join(format!("clip_001/lr_{k:03}.png")))
                .unwrap()
                .to_rgb8();
            assert_eq!(hr.dimensions(), (48, 32));
            assert_eq!(lr.dimensions(), (12, 8));
            assert_eq!(hr, frames.hr[k].to_rgb8());
            assert_eq!(lr, frames.lr[k].to_rgb8());
        }
        // an existing eval set is not overwritten
        let err = format!("{:#}", eval_set(&args).unwrap_err());
        assert!(err.contains("manifest.json"), "{err}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
