//! `turbovsr train vae|denoiser`: the training commands (DESIGN §7 style: one command per
//! stage, a run folder that resumes, an exported checkpoint folder at the end).

use std::path::PathBuf;

use anyhow::Context;
use candle_core::DType;

use super::denoiser::{export_model, train_denoiser, DenoiserInit, DenoiserTrainConfig, Objective};
use super::run::RunDir;
use super::source::{ClipSource, SyntheticSource};
use super::vae::{export_vae, reconstruction_psnr, train_vae, VaeInit, VaeTrainConfig};
use crate::model::vae::AutoencoderKlLtxVideo;

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    #[command(subcommand)]
    pub stage: Stage,
}

#[derive(Debug, clap::Subcommand)]
pub enum Stage {
    /// Train the small VAE (an autoencoder on HR and degraded clips).
    Vae(VaeArgs),
    /// Train the denoiser on a trained VAE's latents.
    Denoiser(DenoiserArgs),
}

/// Where the clips come from.
#[derive(Debug, clap::Args)]
pub struct DataArgs {
    /// Image set root written by scripts/data/fetch-wallpapers.sh (train split).
    #[arg(long, default_value = "data/wallpapers")]
    pub data: PathBuf,
    /// Procedural clips instead of the image set (for tests and smoke runs).
    #[arg(long)]
    pub synthetic: bool,
    /// HR crop size in pixels (a multiple of 32).
    #[arg(long, default_value_t = 128)]
    pub crop: usize,
    /// Degradation preset of the LR clips: realesrgan, mild, or mixed (half each).
    #[arg(long, default_value = "realesrgan")]
    pub degrade: String,
}

#[derive(Debug, clap::Args)]
pub struct VaeArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Run folder (checkpoint, log.csv); an existing run resumes.
    #[arg(long)]
    pub out: PathBuf,
    /// Total steps (a resumed run continues up to this count).
    #[arg(long, default_value_t = 1000)]
    pub steps: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Still images per image batch.
    #[arg(long, default_value_t = VaeTrainConfig::default().image_batch)]
    pub image_batch: usize,
    /// Clips per video batch (batches alternate: image, video, ...).
    #[arg(long, default_value_t = VaeTrainConfig::default().video_batch)]
    pub video_batch: usize,
    /// Starting weights: he (random) or pca (the principal-component autoencoder of the
    /// training patches).
    #[arg(long, value_enum, default_value_t = VaeInit::He)]
    pub init: VaeInit,
    /// Write the trained VAE (diffusers folder) here at the end.
    #[arg(long)]
    pub export: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct DenoiserArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Trained VAE folder (from `train vae --export`).
    #[arg(long)]
    pub vae: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 1000)]
    pub steps: usize,
    #[arg(long, default_value_t = 2)]
    pub seed: u64,
    #[arg(long, default_value_t = 5e-4)]
    pub lr: f64,
    #[arg(long, value_enum, default_value_t = Objective::Shortcut)]
    pub objective: Objective,
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Starting weights: zero (the velocity starts at 0) or condition (one step from noise
    /// starts as the condition, the bicubic baseline's latent).
    #[arg(long, value_enum, default_value_t = DenoiserInit::Zero)]
    pub init: DenoiserInit,
    /// Largest step count whose steps the shortcut loss bootstraps (a power of two).
    #[arg(long, default_value_t = DenoiserTrainConfig::default().max_bootstrap_steps)]
    pub max_bootstrap_steps: usize,
    /// Smallest noise level of flow-matching batches.
    #[arg(long, default_value_t = 0.0)]
    pub min_level: f64,
    /// Step counts the trajectory objective trains, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = DenoiserTrainConfig::default().trajectory_steps)]
    pub trajectory_steps: Vec<usize>,
    /// Train only the weights whose names start with one of these prefixes (comma-separated;
    /// e.g. `transformer_blocks.` keeps a condition start's input and output maps fixed).
    #[arg(long, value_delimiter = ',')]
    pub train_only: Vec<String>,
    /// Probability of the noise augmentation of the condition.
    #[arg(long, default_value_t = DenoiserTrainConfig::default().cond_aug)]
    pub cond_aug: f64,
    /// Steps of linear learning-rate warm-up.
    #[arg(long, default_value_t = DenoiserTrainConfig::default().optim.warmup)]
    pub warmup: usize,
    /// Write the complete model folder (vae/, transformer/, turbovsr.json) here at the end.
    #[arg(long)]
    pub export: Option<PathBuf>,
}

fn source(args: &DataArgs) -> anyhow::Result<Box<dyn ClipSource>> {
    if args.crop == 0 || args.crop % 32 != 0 {
        anyhow::bail!("--crop {} must be a positive multiple of 32", args.crop);
    }
    if args.synthetic {
        return Ok(Box::new(SyntheticSource {
            height: args.crop,
            width: args.crop,
            scale: 4,
        }));
    }
    super::data_source::open(&args.data, args.crop, &args.degrade)
}

pub fn run(args: &TrainArgs) -> anyhow::Result<()> {
    let say = |m: &str| eprintln!("{m}");
    match &args.stage {
        Stage::Vae(a) => {
            let src = source(&a.data)?;
            let run = RunDir::create(&a.out)?;
            if a.image_batch == 0 || a.video_batch == 0 {
                anyhow::bail!("--image-batch and --video-batch must be at least 1");
            }
            let mut cfg = VaeTrainConfig {
                seed: a.seed,
                image_batch: a.image_batch,
                video_batch: a.video_batch,
                init: a.init,
                ..VaeTrainConfig::default()
            };
            cfg.optim.lr = a.lr;
            let model = train_vae(src.as_ref(), &run, &cfg, a.steps, say)?;
            let psnr = reconstruction_psnr(&model.vae, src.as_ref(), 8, 9, 0xE7A1)?;
            eprintln!("reconstruction PSNR on 8 training clips of 9 frames: {psnr:.2} dB");
            if let Some(dir) = &a.export {
                export_vae(&model, src.as_ref(), dir, DType::F16)?;
                eprintln!("wrote {}", dir.display());
            }
        }
        Stage::Denoiser(a) => {
            let src = source(&a.data)?;
            let vae = AutoencoderKlLtxVideo::load(&a.vae, &candle_core::Device::Cpu, DType::F32)
                .with_context(|| format!("loading the VAE {}", a.vae.display()))?;
            let run = RunDir::create(&a.out)?;
            let mut cfg = DenoiserTrainConfig {
                seed: a.seed,
                objective: a.objective,
                batch: a.batch,
                init: a.init,
                max_bootstrap_steps: a.max_bootstrap_steps,
                min_level: a.min_level,
                trajectory_steps: a.trajectory_steps.clone(),
                trainable: a.train_only.clone(),
                cond_aug: a.cond_aug,
                ..DenoiserTrainConfig::default()
            };
            if let Some(bad) = cfg
                .trajectory_steps
                .iter()
                .find(|n| !crate::sample::schedule::VALID_STEPS.contains(n))
            {
                anyhow::bail!(
                    "--trajectory-steps {bad} is not one of {:?}",
                    crate::sample::schedule::VALID_STEPS
                );
            }
            if !(0.0..=1.0).contains(&cfg.cond_aug) {
                anyhow::bail!(
                    "--cond-aug {} must be a probability in [0, 1]",
                    cfg.cond_aug
                );
            }
            cfg.optim.lr = a.lr;
            cfg.optim.warmup = a.warmup;
            let dn = train_denoiser(src.as_ref(), &vae, &run, &cfg, a.steps, say)?;
            if let Some(dir) = &a.export {
                // the training crop in latents: the element's default tile
                let vc = vae.config();
                let (h, w) = src.size();
                let (sc, tc) = (vc.spatial_compression(), vc.temporal_compression());
                let tile = [1 + (cfg.frames - 1) / tc, h / sc, w / sc];
                export_model(&dn, &cfg, &a.vae, dir, tile, DType::F16)?;
                eprintln!("wrote {}", dir.display());
            }
        }
    }
    Ok(())
}
