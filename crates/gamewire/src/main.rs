//! The `gamewire` command: `gamewire serve` runs the game server, `gamewire bots` loads one, and
//! `gamewire bench` measures servers side by side.

mod bench;
mod bots;
mod chaos;
mod clock;
mod serve;

use clap::{Parser, Subcommand};

/// gamewire: a zero-copy, event-driven game server core.
#[derive(Debug, Parser)]
#[command(name = "gamewire", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the game server (protocol v1 over TCP).
    Serve(serve::ServeArgs),
    /// Simulate players over TCP against a server (open-loop load, latency histogram).
    Bots(bots::BotsArgs),
    /// Measure servers side by side: CPU, peak RSS, frames/s and latency of each, in one run.
    Bench(bench::BenchArgs),
}

fn main() -> anyhow::Result<()> {
    gamewire_cli::init_logging();
    match Cli::parse().command {
        Command::Serve(args) => serve::run(args),
        Command::Bots(args) => bots::run(args),
        Command::Bench(args) => bench::run(args),
    }
}
