//! `turbovsr inspect MODEL` (DESIGN §7): a checkpoint's layout, sizes, keys and problems.

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::model::checkpoint::inspect::inspect;

/// Arguments of `turbovsr inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// Checkpoint folder, single-file LTX-Video checkpoint, or diffusers module folder.
    pub model: PathBuf,
}

/// `turbovsr inspect`: prints the report; an error (non-zero exit) when the model cannot run.
pub fn run_inspect(args: &InspectArgs) -> Result<()> {
    let report = inspect(&args.model);
    print!("{}", report.text());
    if !report.can_run() {
        bail!(
            "{} cannot run: {} problem(s), listed above",
            args.model.display(),
            report.problems.len()
        );
    }
    Ok(())
}
