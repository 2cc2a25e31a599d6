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
    /// Time one window by stage (ms per output frame, TFLOP/s, peak device memory).
    Bench(gstturbovsr::bench::BenchArgs),
    /// Run the parity fixtures on a device and compare with the CPU f32 result.
    Parity(gstturbovsr::parity::ParityArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Forward(args) => gstturbovsr::model::forward::run(args),
        Command::MakeTestModel(args) => gstturbovsr::model::turbovsr::test_model::run(args),
        Command::Bench(args) => gstturbovsr::bench::run(args),
        Command::Parity(args) => gstturbovsr::parity::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("turbovsr: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
