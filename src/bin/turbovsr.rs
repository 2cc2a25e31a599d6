//! The `turbovsr` command-line tool (DESIGN §7).

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "turbovsr", version, about = "TurboVSR video super-resolution")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one module on tensors (parity checks and timing).
    Forward(gstturbovsr::model::forward::ForwardArgs),
    /// Write a randomly initialised checkpoint folder (tests, demos, benchmarks; it upscales
    /// nothing meaningfully).
    MakeTestModel(gstturbovsr::model::turbovsr::test_model::MakeTestModelArgs),
    /// Upscale a video file to a video file (or PNG frames) with a progress line.
    Upscale(gstturbovsr::upscale_cli::UpscaleArgs),
    /// Report a model's layout, VAE generation, transformer size, parameters, dtypes, TurboVSR
    /// keys and problems; fails when the model cannot run.
    Inspect(gstturbovsr::model::checkpoint::inspect::InspectArgs),
    /// Convert between the single-file LTX-Video layout and the checkpoint folder.
    Convert(gstturbovsr::model::checkpoint::inspect::ConvertArgs),
    /// Time one window by stage (ms per output frame, TFLOP/s, peak device memory).
    Bench(gstturbovsr::bench::BenchArgs),
    /// Run the parity fixtures on a device and compare with the CPU f32 result.
    Parity(gstturbovsr::parity::ParityArgs),
    /// Split an input into time-range segments for several workers (writes DIR/plan.json).
    Plan(gstturbovsr::segments::PlanArgs),
    /// Upscale one segment of a plan (a worker's, a job array task's command).
    Segment(gstturbovsr::segments::SegmentArgs),
    /// Join a plan's finished segments into one file with the input's audio.
    Join(gstturbovsr::segments::join::JoinArgs),
    /// Decode a file and print its frames (timestamps, checksums, differences) and audio as JSON.
    Probe(gstturbovsr::segments::probe::ProbeArgs),
    /// PSNR, SSIM and sharpness of bicubic and a model (at several step counts) on an eval set.
    Eval(gstturbovsr::eval::EvalArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Forward(args) => gstturbovsr::model::forward::run(args),
        Command::MakeTestModel(args) => gstturbovsr::model::turbovsr::test_model::run(args),
        Command::Upscale(args) => gstturbovsr::upscale_cli::run(args),
        Command::Inspect(args) => gstturbovsr::model::checkpoint::inspect::run_inspect(args),
        Command::Convert(args) => gstturbovsr::model::checkpoint::inspect::run_convert(args),
        Command::Bench(args) => gstturbovsr::bench::run(args),
        Command::Parity(args) => gstturbovsr::parity::run(args),
        Command::Eval(args) => gstturbovsr::eval::run(args),
        Command::Plan(args) => gstturbovsr::segments::run_plan(args),
        Command::Segment(args) => gstturbovsr::segments::run_segment(args),
        Command::Join(args) => gstturbovsr::segments::join::run(args),
        Command::Probe(args) => gstturbovsr::segments::probe::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("turbovsr: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
