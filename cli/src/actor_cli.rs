//! The `actor` command line: its flags (the actor's settings plus the metrics address) and the run.

use crate::process;
use actor::client::ActorOptions;
use clap::Parser;

/// Proxima actor: runs environments and streams rollouts to a learner; reconnects by itself.
#[derive(Parser)]
#[command(name = "actor", version)]
pub struct Cli {
    #[command(flatten)]
    settings: ActorOptions,
    /// Serve Prometheus metrics on this address (`/metrics`); `none` to disable.
    #[arg(long, env = "PROXIMA_METRICS_ADDR", default_value = "0.0.0.0:9001")]
    metrics_addr: String,
}

/// Runs the actor until a signal or a fatal error.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = process::runtime(1)?;
    process::serve_metrics(&runtime, &cli.metrics_addr, common::metrics::Role::Actor, &cli.settings.env, false)?;
    runtime.block_on(async move { actor::client::run(cli.settings, process::cancel_on_signals()).await })?;
    Ok(())
}
