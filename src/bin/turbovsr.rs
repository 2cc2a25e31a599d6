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
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Forward(args) => gstturbovsr::model::forward::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("turbovsr: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
