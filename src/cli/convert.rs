//! `turbovsr convert SRC DST` (DESIGN §7): between the single-file LTX-Video layout and the
//! checkpoint folder.

use std::path::PathBuf;

use anyhow::Result;

use crate::model::checkpoint::inspect::{convert, ConvertTo};
use crate::model::checkpoint::{Checkpoint, Layout};

/// Which way `convert` goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ConvertToArg {
    /// The DESIGN §3.3 folder (`vae/`, `transformer/` in the diffusers layout).
    Folder,
    /// The original single-file LTX-Video layout.
    SingleFile,
}

impl From<ConvertToArg> for ConvertTo {
    fn from(to: ConvertToArg) -> Self {
        match to {
            ConvertToArg::Folder => ConvertTo::Folder,
            ConvertToArg::SingleFile => ConvertTo::SingleFile,
        }
    }
}

/// Arguments of `turbovsr convert`.
#[derive(Debug, clap::Args)]
pub struct ConvertArgs {
    /// The checkpoint to convert (any layout `inspect` reads).
    pub src: PathBuf,
    /// Output: a folder; for `--to single-file`, a `.safetensors` path writes the bare file.
    pub dst: PathBuf,
    /// Target layout (default: the other one: single file -> folder, folder -> single file).
    #[arg(long, value_enum)]
    pub to: Option<ConvertToArg>,
    /// Cast the weights: f32, bf16 or f16 (default: keep the stored types).
    #[arg(long)]
    pub dtype: Option<String>,
}

/// `turbovsr convert`.
pub fn run_convert(args: &ConvertArgs) -> Result<()> {
    let cast = args
        .dtype
        .as_deref()
        .map(super::forward::parse_precision)
        .transpose()?;
    let ck = Checkpoint::open(&args.src)?;
    let to = args.to.map(ConvertTo::from).unwrap_or(match ck.layout {
        Layout::SingleFile { .. } => ConvertTo::Folder,
        _ => ConvertTo::SingleFile,
    });
    let written = convert(&ck, &args.dst, to, cast)?;
    for line in written {
        println!("{line}");
    }
    Ok(())
}
