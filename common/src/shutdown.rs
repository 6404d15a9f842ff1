//! The one shutdown path: the first SIGINT or SIGTERM asks for a graceful stop, the second exits at once; and the
//! compute-thread default both binaries start with.

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
