//! The one shutdown path: the first SIGINT or SIGTERM asks for a graceful stop, the second exits at once; and the
//! compute-thread default both binaries start with.

/// Calls `first` on the first SIGINT or SIGTERM (the graceful shutdown: finish, checkpoint or flush, leave) and
/// exits the process at once, with code 130, on the second. Run it as a task of the process's runtime.
pub async fn shut_down_on_signals(first: impl FnOnce()) {
    let mut signals = ShutdownSignals::new();
    signals.recv().await;
    tracing::info!("shutdown requested; finishing (signal again to exit at once)");
    first();
    signals.recv().await;
    tracing::warn!("second signal: exiting at once");
    std::process::exit(130);
}

/// SIGINT and SIGTERM, each listened to from its creation on: a signal that arrives while `first` runs is kept
/// for the next [`ShutdownSignals::recv`], not lost between two waits.
struct ShutdownSignals {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl ShutdownSignals {
    /// Starts listening (inside a tokio runtime).
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let streams = match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
                (Ok(interrupt), Ok(terminate)) => Some((interrupt, terminate)),
                _ => None,
            };
            Self { streams }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// Resolves on the next SIGINT or SIGTERM (Ctrl-C where the streams could not be made).
    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some((interrupt, terminate)) = &mut self.streams {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            return;
        }
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
