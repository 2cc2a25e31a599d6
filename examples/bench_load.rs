//! Peak host memory of loading a checkpoint against its size on disk (issue 7: below 1.3x for
//! the `ltx-2b` test preset in bf16).
//!
//!     cargo run --release --example bench_load -- [DIR] [--keep]
//!
//! Writes the `ltx-2b` preset (about 2B parameters in bf16, 28-block transformer with the
//! TurboVSR head and the 0.9.1 VAE) to DIR (default `out/bench-load-ltx-2b`) unless it is
//! there, then loads the VAE and the denoiser in bf16 in a child process (so its peak resident
//! set, VmHWM, counts the load alone) and prints the peak against the weight files' size.
//! Removes DIR afterwards unless `--keep`. DIR may also be an existing checkpoint in any layout,
//! e.g. the single file `turbovsr convert` writes from it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device};
use gstturbovsr::model::checkpoint::Checkpoint;
use gstturbovsr::model::turbovsr::{write_test_model, Preset, TestModelOptions, TurboVsrDenoiser};
use gstturbovsr::model::vae::AutoencoderKlLtxVideo;

/// `VmHWM` (peak resident set) of this process, in bytes.
fn peak_rss() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .ok_or_else(|| anyhow::anyhow!("no VmHWM in /proc/self/status"))?;
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("bad VmHWM line {line:?}"))?
        .parse()?;
    Ok(kb * 1024)
}

/// The child: load, then print `peak_rss_bytes=` and `load_s=`.
fn load(dir: &Path) -> anyhow::Result<()> {
    let start = Instant::now();
    let ck = Checkpoint::open(dir)?;
    let vae_ck = ck.vae()?;
    let vae = AutoencoderKlLtxVideo::from_checkpoint(&vae_ck, &Device::Cpu, DType::BF16)?;
    let tf_ck = ck.transformer()?;
    let p = tf_ck.config.patch_size;
    let cond = vae.config().latent_channels * p * p;
    let denoiser = TurboVsrDenoiser::from_checkpoint(&tf_ck, cond, 0.7, DType::BF16, &Device::Cpu)?;
    let secs = start.elapsed().as_secs_f64();
    println!("peak_rss_bytes={}", peak_rss()?);
    println!("load_s={secs:.2}");
    // keep both alive until the peak is read
    drop((vae, denoiser));
    Ok(())
}

fn file_bytes(dir: &Path) -> anyhow::Result<u64> {
    if dir.is_file() {
        return Ok(std::fs::metadata(dir)?.len());
    }
    let mut total = 0;
    for sub in ["vae", "transformer"] {
        for e in std::fs::read_dir(dir.join(sub))? {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "safetensors") {
                total += std::fs::metadata(&p)?.len();
            }
        }
    }
    Ok(total)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        return load(Path::new(&args[1]));
    }
    let keep = args.iter().any(|a| a == "--keep");
    let dir = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("out/bench-load-ltx-2b"));
    // DIR may also be a single-file checkpoint (`turbovsr convert DIR FILE.safetensors`).
    let made = !dir.is_file() && !dir.join("transformer").is_dir();
    if made {
        let start = Instant::now();
        write_test_model(&dir, &TestModelOptions::new(Preset::Ltx2b))?;
        println!(
            "wrote the ltx-2b preset to {} in {:.1} s",
            dir.display(),
            start.elapsed().as_secs_f64()
        );
    }
    let size = file_bytes(&dir)?;
    let out = std::process::Command::new(std::env::current_exe()?)
        .arg("--child")
        .arg(&dir)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        anyhow::bail!(
            "loading failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let value = |k: &str| -> anyhow::Result<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .ok_or_else(|| anyhow::anyhow!("no {k} in {text:?}"))?
            .trim()
            .parse::<f64>()
            .map_err(Into::into)
    };
    let peak = value("peak_rss_bytes=")?;
    println!("weight files: {:.3} GB", size as f64 / 1e9);
    println!("peak host RSS while loading (bf16): {:.3} GB", peak / 1e9);
    println!("ratio: {:.3} (target < 1.3)", peak / size as f64);
    println!("load time: {:.1} s", value("load_s=")?);
    if made && !keep {
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(())
}
