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
    /// Serve Prometheus metrics on this address (`/metrics`; a taken port is an error); `none` to disable.
    /// [default: 0.0.0.0 at the first free port of 9001-9099, so several actors share a host; logged]
    #[arg(long, env = "PROXIMA_METRICS_ADDR", value_name = "ADDR")]
    metrics_addr: Option<String>,
}

/// Runs the actor until a signal or a fatal error.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = process::runtime(1)?;
    process::serve_actor_metrics(&runtime, cli.metrics_addr.as_deref(), &cli.settings.env)?;
    runtime.block_on(async move { actor::client::run(cli.settings, process::cancel_on_signals()).await })?;
    Ok(())
}
