//! `turbovsr segment PLAN I` (DESIGN §9): upscales one segment of a plan (a worker's, a job
//! array task's command) to a lossless intermediate and its sidecar.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;

use super::plan::{plan_dir, upscale_args, write_atomically, Plan, SegmentDone};
use super::range::Position;

/// The lossless, intra-only encoding of the segments' outputs.
pub const INTERMEDIATE_ENCODER: &str = "capsfilter caps=video/x-raw,format=BGRx ! avenc_ffv1";

/// Removes what earlier attempts at this segment left (`seg_000I.part.PID.mkv`: a worker that
/// died, a lost node). A retry runs after the attempt it replaces is gone.
fn remove_stale_parts(output: &Path) {
    let (Some(dir), Some(stem)) = (output.parent(), output.file_stem()) else {
        return;
    };
    let prefix = format!("{}.part.", stem.to_string_lossy());
    if let Ok(entries) = std::fs::read_dir(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    }) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// Arguments of `turbovsr segment`.
#[derive(Args, Debug, Clone)]
pub struct SegmentArgs {
    /// plan.json written by `turbovsr plan`.
    pub plan: PathBuf,
    /// The segment to upscale, counting from 0 (a job array's task index).
    pub index: usize,
    /// CUDA device number, replacing the plan's.
    #[arg(long)]
    pub device_id: Option<u32>,
    /// Upscale it again even when it is done.
    #[arg(short = 'y', long)]
    pub overwrite: bool,
    /// No progress line.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Runs `turbovsr segment`.
pub fn run_segment(args: &SegmentArgs) -> anyhow::Result<()> {
    let plan = Plan::load(&args.plan)?;
    let dir = plan_dir(&args.plan);
    let Some(segment) = plan.segments.get(args.index) else {
        bail!(
            "plan '{}' has {} segments (0..={}); there is no segment {}",
            args.plan.display(),
            plan.segments.len(),
            plan.segments.len().saturating_sub(1),
            args.index
        );
    };
    let output = dir.join(&segment.output);
    let sidecar = dir.join(&segment.sidecar);
    if !args.overwrite && sidecar.exists() && output.exists() {
        eprintln!("turbovsr: segment {} is already done", segment.index);
        return Ok(());
    }
    let _ = std::fs::remove_file(&sidecar);
    remove_stale_parts(&output);
    let part = output.with_extension(format!("part.{}.mkv", std::process::id()));
    let mut extra = vec![
        format!("--start={}", Position::Frame(segment.context_start)),
        format!("--encoder={INTERMEDIATE_ENCODER}"),
        "--no-audio".to_string(),
        "--overwrite".to_string(),
    ];
    if let Some(end) = segment.end {
        extra.push(format!("--end={}", Position::Frame(end)));
    }
    if args.quiet {
        extra.push("--quiet".into());
    }
    let mut upscale = upscale_args(&plan.input, &part, &extra, &plan.upscale_args)?;
    if let Some(id) = args.device_id {
        upscale.device_id = id;
    }
    let summary = super::upscale::upscale(&upscale, true).map_err(|e| {
        let _ = std::fs::remove_file(&part);
        e.context(format!("segment {} of '{}'", segment.index, plan.input))
    })?;
    let short = match plan.expected_frames(segment) {
        Some(want) => summary.frames != want,
        None => summary.frames < segment.start - segment.context_start + 1,
    };
    if short {
        let _ = std::fs::remove_file(&part);
        bail!(
            "segment {} wrote {} frames from frame {} (timestamps {:?} to {:?} ns), the plan \
             expects {}: the input is shorter than planned or its frame rate is not constant",
            segment.index,
            summary.frames,
            segment.context_start,
            summary.pts.first(),
            summary.pts.last(),
            plan.expected_frames(segment).map_or_else(
                || format!("more than {}", segment.start - segment.context_start),
                |n| n.to_string()
            )
        );
    }
    std::fs::rename(&part, &output).with_context(|| {
        format!(
            "cannot rename '{}' to '{}'",
            part.display(),
            output.display()
        )
    })?;
    let done = SegmentDone {
        index: segment.index,
        frames: summary.frames,
        pts: summary.pts,
    };
    write_atomically(&sidecar, &serde_json::to_vec(&done)?)?;
    Ok(())
}
