//! Process set-up shared by the binaries, and one shutdown path: SIGINT or SIGTERM sets a flag (or cancels a
//! token) that every loop of the process polls.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Sets the returned flag on the first SIGINT (Ctrl-C) or SIGTERM; a second signal exits immediately (code 130).
pub fn on_signal() -> std::io::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    let f = flag.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || rt.block_on(shut_down_on_signals(move || f.store(true, Ordering::SeqCst))))?;
    Ok(flag)
}

/// Calls `first` on the first SIGINT or SIGTERM (the graceful shutdown: finish, checkpoint or flush, leave) and
/// exits the process at once, with code 130, on the second. Run it as a task of the process's runtime.
pub async fn shut_down_on_signals(first: impl FnOnce()) {
    wait_for_signal().await;
    tracing::info!("shutdown requested; finishing (signal again to exit at once)");
    first();
    wait_for_signal().await;
    tracing::warn!("second signal: exiting at once");
    std::process::exit(130);
}

/// Resolves on SIGINT or SIGTERM.
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Uses one compute thread for candle unless `RAYON_NUM_THREADS` is already set: the PPO networks are so small
/// that a thread pool's hand-off costs more than it gains, and actors and learner share the machine's cores.
/// Call first thing in `main`, before any other thread exists.
pub fn default_compute_threads() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // SAFETY: called at the start of `main`, while the process is single-threaded.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", "1") };
    }
}

/// Start-up common to both binaries: one compute thread by default (see [`default_compute_threads`]) and
/// structured logs on stderr, filtered by `RUST_LOG` (default `info`). Call first thing in `main`.
pub fn init_process() {
    default_compute_threads();
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
