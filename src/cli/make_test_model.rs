//! `turbovsr make-test-model DIR` (DESIGN §7): a randomly initialised checkpoint folder.

use crate::model::turbovsr::test_model::{write_test_model, Preset, TestModelOptions};

/// Arguments of `turbovsr make-test-model`.
#[derive(Debug, clap::Args)]
pub struct MakeTestModelArgs {
    /// Folder to write (created if missing).
    pub dir: std::path::PathBuf,
    /// tiny (tests, seconds on a CPU) or ltx-2b (the real LTX-Video 2B + 0.9.1 VAE shapes).
    #[arg(long, default_value = "tiny")]
    pub preset: Preset,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Leave out the shortcut step-size embedder (a plain flow-matching checkpoint).
    #[arg(long)]
    pub no_step_embedder: bool,
}

/// `turbovsr make-test-model`.
pub fn run(args: &MakeTestModelArgs) -> anyhow::Result<()> {
    let options = TestModelOptions {
        preset: args.preset,
        seed: args.seed,
        step_embedder: !args.no_step_embedder,
    };
    write_test_model(&args.dir, &options)?;
    println!(
        "wrote a randomly initialised {} checkpoint to {}: it has the shapes of a TurboVSR model \
         but upscales nothing meaningfully (for tests, demos and benchmarks only)",
        match args.preset {
            Preset::Tiny => "tiny",
            Preset::Ltx2b => "ltx-2b",
        },
        args.dir.display()
    );
    Ok(())
}
