//! Standalone `outpost-sim` binary: the same subcommands as `outpost sim ...`, for scripts that
//! need the simulator without building the whole node.

use std::process::ExitCode;

use clap::Parser;
use outpost_sim::cli::{run, SimCommand};

#[derive(Parser)]
#[command(
    name = "outpost-sim",
    version,
    about = "Outpost cache simulator: traces, hit ratios, hierarchies"
)]
struct Cli {
    #[command(subcommand)]
    cmd: SimCommand,
}

fn main() -> ExitCode {
    match run(Cli::parse().cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("outpost-sim: {e}");
            ExitCode::FAILURE
        }
    }
}
