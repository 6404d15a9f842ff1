//! What both binaries do around their work: logging, the async runtime, the metrics endpoint, and the one
//! shutdown path (a [`CancellationToken`] cancelled by the first SIGINT or SIGTERM).

use anyhow::Context;
use tokio_util::sync::CancellationToken;

/// Start-up common to both binaries: one compute thread by default (see
/// [`common::shutdown::default_compute_threads`]) and structured logs on stderr, filtered by `RUST_LOG` (default
/// `info`). Call first thing in `main`.
pub fn init() {
    common::shutdown::default_compute_threads();
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        // Colour codes only for a person at a terminal, not in files, pipes and container logs.
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// A multi-threaded runtime with `workers` worker threads.
pub fn runtime(workers: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Serves Prometheus metrics on `addr` from `runtime`; with `none`, only records them when `record_anyway` (the
/// learner, for its dashboard and its final `metrics.prom`), else not at all. Returns the recorder's handle when
/// there is one.
pub fn serve_metrics(
    runtime: &tokio::runtime::Runtime,
    addr: &str,
    role: common::metrics::Role,
    env: &str,
    record_anyway: bool,
) -> anyhow::Result<Option<common::metrics::PrometheusHandle>> {
    let parsed = match addr {
        "none" if !record_anyway => return Ok(None),
        "none" => None,
        addr => Some(addr.parse().with_context(|| format!("bad --metrics-addr {addr}"))?),
    };
    let _guard = runtime.enter();
    let handle = common::metrics::serve(parsed, role, env)?;
    if let Some(addr) = parsed {
        tracing::info!(url = %format!("http://{addr}/metrics"), "serving Prometheus metrics");
    }
    Ok(Some(handle))
}

/// The actor's metrics: on `addr` when given (`none`: not at all; a taken port is an error, since it was asked
/// for), else on 0.0.0.0 at the first free port of [`common::metrics::ACTOR_PORTS`] (9001, or a later one when
/// other actors on this host hold it). Logs the URL it serves on.
pub fn serve_actor_metrics(runtime: &tokio::runtime::Runtime, addr: Option<&str>, env: &str) -> anyhow::Result<()> {
    use common::metrics::{ACTOR_PORTS, Role};
    let Some(addr) = addr else {
        let _guard = runtime.enter();
        let ip = std::net::Ipv4Addr::UNSPECIFIED.into();
        let (_, served) = common::metrics::serve_first_free(ip, ACTOR_PORTS, Role::Actor, env)
            .context("no free port for the metrics: choose one with --metrics-addr HOST:PORT (or `none`)")?;
        let url = format!("http://{served}/metrics");
        if served.port() == *ACTOR_PORTS.start() {
            tracing::info!(url = %url, "serving Prometheus metrics");
        } else {
            let (first, last) = (ACTOR_PORTS.start(), ACTOR_PORTS.end());
            tracing::info!(
                url = %url,
                "serving Prometheus metrics (port {first} is taken, by another actor on this host?: without \
                 --metrics-addr an actor serves on the first free port of {first}-{last})"
            );
        }
        return Ok(());
    };
    serve_metrics(runtime, addr, Role::Actor, env, false).map(drop)
}

/// A token that the first SIGINT or SIGTERM cancels (a second exits at once). Call inside a runtime.
pub fn cancel_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(common::shutdown::shut_down_on_signals(move || t.cancel()));
    token
}

/// [`cancel_on_signals`] for a process without a runtime of its own: the signals are watched on a thread.
pub fn stop_on_signals() -> std::io::Result<CancellationToken> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    let token = CancellationToken::new();
    let t = token.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || rt.block_on(common::shutdown::shut_down_on_signals(move || t.cancel())))?;
    Ok(token)
}
