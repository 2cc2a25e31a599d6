//! The `turbovsr` command line (DESIGN §7): one file per subcommand, each with its clap
//! arguments and its `run`; `options` holds the options several share and maps clap's enums
//! into the core settings, `media` and `range` the GStreamer pieces they share.

mod bench;
mod convert;
mod eval;
mod forward;
mod inspect;
mod join;
mod make_test_model;
mod media;
mod options;
mod parity;
mod plan;
mod probe;
mod range;
mod segment;
mod upscale;

use clap::{Parser, Subcommand};

pub use upscale::SIDE_BY_SIDE_SEPARATOR;

#[derive(Parser)]
#[command(name = "turbovsr", version, about = "TurboVSR video super-resolution")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one module on tensors (parity checks and timing).
    Forward(forward::ForwardArgs),
    /// Write a randomly initialised checkpoint folder (tests, demos, benchmarks; it upscales
    /// nothing meaningfully).
    MakeTestModel(make_test_model::MakeTestModelArgs),
    /// Upscale a video file to a video file (or PNG frames) with a progress line.
    Upscale(upscale::UpscaleArgs),
    /// Report a model's layout, VAE generation, transformer size, parameters, dtypes, TurboVSR
    /// keys and problems; fails when the model cannot run.
    Inspect(inspect::InspectArgs),
    /// Convert between the single-file LTX-Video layout and the checkpoint folder.
    Convert(convert::ConvertArgs),
    /// Time one window by stage (ms per output frame, TFLOP/s, peak device memory).
    Bench(bench::BenchArgs),
    /// Run the parity fixtures on a device and compare with the CPU f32 result.
    Parity(parity::ParityArgs),
    /// Split an input into time-range segments for several workers (writes DIR/plan.json).
    Plan(plan::PlanArgs),
    /// Upscale one segment of a plan (a worker's, a job array task's command).
    Segment(segment::SegmentArgs),
    /// Join a plan's finished segments into one file with the input's audio.
    Join(join::JoinArgs),
    /// Decode a file and print its frames (timestamps, checksums, differences) and audio as JSON.
    Probe(probe::ProbeArgs),
    /// PSNR, SSIM and sharpness of bicubic and a model (at several step counts) on an eval set.
    Eval(eval::EvalArgs),
}

/// Runs the command line of `std::env::args`: the `turbovsr` binary's `main`.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Forward(args) => forward::run(args),
        Command::MakeTestModel(args) => make_test_model::run(args),
        Command::Upscale(args) => upscale::run(args),
        Command::Inspect(args) => inspect::run_inspect(args),
        Command::Convert(args) => convert::run_convert(args),
        Command::Bench(args) => bench::run(args),
        Command::Parity(args) => parity::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Plan(args) => plan::run_plan(args),
        Command::Segment(args) => segment::run_segment(args),
        Command::Join(args) => join::run(args),
        Command::Probe(args) => probe::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("turbovsr: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
