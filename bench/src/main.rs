//! `proxima-bench`: the micro-benchmarks that `bench/run.py` runs. Each subcommand prints one JSON line.

mod act;
mod env;
mod ingest;
mod model_flags;
mod update;

use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "proxima micro-benchmarks (one JSON line each)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Raw env stepping on one core: pre-drawn random actions, auto-reset, no policy.
    Env(env::Args),
    /// Actor inference per step (`Policy::act` on a batch of envs), with or without a recurrent core.
    Act(act::Args),
    /// Learner update throughput: samples per second through the PPO epochs on a synthetic CartPole batch.
    Update(update::Args),
    /// The learner's gRPC ingest path alone: clients submit valid rollouts as fast as they are accepted; the
    /// trainer is a thread that only drains the queue.
    Ingest(ingest::Args),
}

fn main() -> anyhow::Result<()> {
    let report = match Cli::parse().command {
        Command::Env(args) => env::run(&args)?,
        Command::Act(args) => act::run(&args)?,
        Command::Update(args) => update::run(&args)?,
        Command::Ingest(args) => ingest::run(&args)?,
    };
    println!("{report}");
    Ok(())
}
