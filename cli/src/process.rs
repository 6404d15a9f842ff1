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

/// What the binaries' `main` returns for `result`: on an error, `Error: ` and its message on stderr, then the causes
/// that add to it (a cause the message already quotes, such as an OS error, is not printed again) and exit status
/// 1. With `RUST_BACKTRACE` or `RUST_LIB_BACKTRACE` set (not `0`), anyhow's full report with its backtrace.
pub fn report(result: anyhow::Result<()>) -> std::process::ExitCode {
    let Err(error) = result else { return std::process::ExitCode::SUCCESS };
    let backtrace = ["RUST_BACKTRACE", "RUST_LIB_BACKTRACE"].iter().any(|v| std::env::var(v).is_ok_and(|v| v != "0"));
    match backtrace {
        true => eprintln!("Error: {error:?}"),
        false => eprintln!("Error: {}", error_text(&error)),
    }
    std::process::ExitCode::FAILURE
}

/// `error`'s message and, under `Caused by:`, its [`common::wire::unsaid_causes`].
fn error_text(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    let causes = common::wire::unsaid_causes(error.as_ref());
    if !causes.is_empty() {
        text.push_str("\n\nCaused by:");
        for cause in causes {
            text.push_str(&format!("\n    {cause}"));
        }
    }
    text
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A cause the message already quotes is left out; one that adds to it is kept, once.
    #[test]
    fn error_text_says_each_cause_once() {
        let missing = || std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory (os error 2)");
        let quoted = anyhow::Error::new(missing()).context(format!("cannot read config a.toml: {}", missing()));
        assert_eq!(error_text(&quoted), "cannot read config a.toml: No such file or directory (os error 2)");
        let taken = std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address already in use (os error 98)");
        let added = anyhow::Error::new(taken).context("cannot listen on 127.0.0.1:1");
        assert_eq!(
            error_text(&added),
            "cannot listen on 127.0.0.1:1\n\nCaused by:\n    Address already in use (os error 98)"
        );
    }
}
