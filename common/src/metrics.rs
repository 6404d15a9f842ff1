//! Metric names for both roles in one place, their descriptions, histogram buckets, and the Prometheus exporter.
//!
//! Conventions: base units, `_total` counters, `_seconds` / `_bytes` suffixes, `_ratio` for 0..1 values. Labels
//! come from small fixed sets only (`outcome`, `reason`, and the process-wide `role` and `env`).

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
pub use metrics_exporter_prometheus::PrometheusHandle;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// Env steps trained on by the learner (counter; `rate()` gives throughput).
pub const ENV_STEPS: &str = "proxima_learner_env_steps_total";
/// Samples passed through the PPO epochs (batch size x epochs run; counter).
pub const SAMPLES_TRAINED: &str = "proxima_learner_samples_trained_total";
/// Rollouts received, by `outcome`: `accepted` (queued), `stale` (too old on arrival), `expired` (too old when the
/// trainer took it from the queue), `rejected` (invalid).
pub const ROLLOUTS: &str = "proxima_learner_rollouts_total";
/// Rejected requests, by `reason` (see [`reason`]).
pub const REJECTED: &str = "proxima_learner_rejected_total";
/// Bytes of rollout messages received (counter).
pub const RECEIVED_BYTES: &str = "proxima_learner_received_bytes_total";
/// Newest published policy version (gauge).
pub const POLICY_VERSION: &str = "proxima_learner_policy_version";
/// Versions between the learner's policy and the one that produced a received rollout (histogram).
pub const POLICY_LAG: &str = "proxima_learner_policy_lag_versions";
/// Rollouts waiting in the queue to the trainer (gauge).
pub const QUEUE_DEPTH: &str = "proxima_learner_queue_depth";
/// Actors of the learner's registry with an open policy stream (gauge).
pub const CONNECTED_ACTORS: &str = "proxima_learner_connected_actors";
/// Actors in the learner's registry: registered and not yet forgotten for idleness (gauge; at least
/// [`CONNECTED_ACTORS`]).
pub const REGISTERED_ACTORS: &str = "proxima_learner_registered_actors";
/// Registrations that never opened a policy stream nor had a rollout accepted, evicted to make room for a newer
/// registration, by `reason` (see [`evicted`]); a registration flood shows here (counter).
pub const EVICTED_REGISTRATIONS: &str = "proxima_learner_evicted_registrations_total";
/// Seconds per PPO update (histogram).
pub const UPDATE_DURATION: &str = "proxima_learner_update_duration_seconds";
/// k3 estimate of KL(old ‖ new) over the last batch (gauge).
pub const APPROX_KL: &str = "proxima_learner_approx_kl";
/// KL target of the adaptive penalty, or of early stopping (gauge; 0 when unused).
pub const KL_TARGET: &str = "proxima_learner_kl_target";
/// KL penalty coefficient β (gauge; 0 for the clipped objective).
pub const KL_BETA: &str = "proxima_learner_kl_beta";
/// Fraction of samples whose ratio left the clip range (gauge).
pub const CLIP_FRACTION: &str = "proxima_learner_clip_fraction_ratio";
/// Mean policy entropy (gauge).
pub const ENTROPY: &str = "proxima_learner_entropy";
/// Explained variance of the value function (gauge, at most 1).
pub const EXPLAINED_VARIANCE: &str = "proxima_learner_explained_variance";
/// Policy loss (gauge).
pub const POLICY_LOSS: &str = "proxima_learner_policy_loss";
/// Value loss (gauge).
pub const VALUE_LOSS: &str = "proxima_learner_value_loss";
/// Learning rate in use (gauge).
pub const LEARNING_RATE: &str = "proxima_learner_learning_rate";
/// GAE advantages of trained samples, before normalisation (histogram).
pub const ADVANTAGE: &str = "proxima_learner_advantage";
/// Returns of finished episodes (histogram).
pub const EPISODE_RETURN: &str = "proxima_learner_episode_return";
/// Lengths of finished episodes in steps (histogram).
pub const EPISODE_LENGTH: &str = "proxima_learner_episode_length_steps";
/// Mean return of the last 100 episodes (gauge).
pub const MEAN_RETURN: &str = "proxima_learner_mean_return";
/// Minibatch steps the update guard did not apply, by `reason` (see [`skip`]): the parameters and optimiser
/// state were rolled back to before the step (counter).
pub const SKIPPED_UPDATES: &str = "proxima_learner_skipped_updates_total";
/// Rollouts blamed for a skipped step: their rows alone made the loss or gradient non-finite; their actor is
/// named in the log and their rows leave the update (counter).
pub const FAULTY_ROLLOUTS: &str = "proxima_learner_faulty_rollouts_total";
/// Checkpoint or model writes that failed (disk full, permissions); earlier checkpoints stay intact (counter).
pub const CHECKPOINT_FAILURES: &str = "proxima_learner_checkpoint_failures_total";
/// `progress.csv` rows that could not be written (disk full); training goes on (counter).
pub const PROGRESS_WRITE_FAILURES: &str = "proxima_learner_progress_write_failures_total";
/// TensorBoard event records (one per update, in the run directory's `events.out.tfevents.*`) that could not be
/// written (disk full); training goes on (counter).
pub const TENSORBOARD_WRITE_FAILURES: &str = "proxima_learner_tensorboard_write_failures_total";

/// Env steps an actor produced and delivered (counter).
pub const ACTOR_ENV_STEPS: &str = "proxima_actor_env_steps_total";
/// Rollouts an actor sent, by `outcome`: `accepted`, `stale`, `rejected`.
pub const ACTOR_ROLLOUTS: &str = "proxima_actor_rollouts_total";
/// Seconds per batched policy forward pass on an actor (histogram).
pub const ACTOR_INFERENCE_LATENCY: &str = "proxima_actor_inference_latency_seconds";
/// Seconds from a policy's publication by the learner to its arrival at the actor (histogram).
pub const ACTOR_WEIGHT_LATENCY: &str = "proxima_actor_weight_update_latency_seconds";
/// Successful re-registrations after a lost connection (counter).
pub const ACTOR_RECONNECTS: &str = "proxima_actor_reconnects_total";
/// 1 while the actor is connected to the learner (gauge).
pub const ACTOR_CONNECTED: &str = "proxima_actor_connected";
/// Policy version the actor acts with (gauge).
pub const ACTOR_POLICY_VERSION: &str = "proxima_actor_policy_version";

/// Rejection reasons (values of the `reason` label).
pub mod reason {
    /// Missing or wrong token.
    pub const UNAUTHENTICATED: &str = "unauthenticated";
    /// Env id, spaces or protocol version differ from the learner's.
    pub const MISMATCH: &str = "mismatch";
    /// Shapes or lengths wrong.
    pub const SHAPE: &str = "shape";
    /// NaN or infinity.
    pub const NON_FINITE: &str = "non_finite";
    /// Action outside the action space.
    pub const ACTION: &str = "action";
    /// Policy version newer than the learner's.
    pub const FUTURE_VERSION: &str = "future_version";
    /// Actor id not registered.
    pub const UNKNOWN_ACTOR: &str = "unknown_actor";
    /// Message above the size limit.
    pub const OVERSIZED: &str = "oversized";
    /// Bytes that do not decode as the request's protobuf message.
    pub const MALFORMED: &str = "malformed";
    /// A finite value outside what any valid policy or env produces (the `server.max_abs_*` bounds).
    pub const OUT_OF_RANGE: &str = "out_of_range";
    /// `actor_name` longer than `server.max_actor_name_bytes`.
    pub const BAD_NAME: &str = "bad_name";
    /// The registry already holds `server.max_actors` live actors.
    pub const TOO_MANY_ACTORS: &str = "too_many_actors";
    /// Every reason.
    pub const ALL: [&str; 12] = [
        UNAUTHENTICATED,
        MISMATCH,
        SHAPE,
        NON_FINITE,
        ACTION,
        FUTURE_VERSION,
        UNKNOWN_ACTOR,
        OVERSIZED,
        MALFORMED,
        OUT_OF_RANGE,
        BAD_NAME,
        TOO_MANY_ACTORS,
    ];
}

/// Why a registration was evicted (values of the `reason` label of [`EVICTED_REGISTRATIONS`]).
pub mod evicted {
    /// Its peer already held `server.max_idle_registrations_per_peer` never-active registrations: the peer's
    /// newest registration replaced its oldest.
    pub const PEER_LIMIT: &str = "peer_limit";
    /// The registry held `server.max_actors` actors: it was the oldest never-active registration past
    /// `server.registration_grace_seconds`, and made room for another peer's registration.
    pub const REGISTRY_FULL: &str = "registry_full";
    /// Every reason.
    pub const ALL: [&str; 2] = [PEER_LIMIT, REGISTRY_FULL];
}

/// What became of a rollout (the `outcome` label of [`ROLLOUTS`] and [`ACTOR_ROLLOUTS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Queued for the trainer.
    Accepted,
    /// Too old on arrival (or produced by an earlier learner process): dropped quietly.
    Stale,
    /// Too old by the time the trainer took it from the queue (learner only).
    Expired,
    /// Invalid: refused with an error status.
    Rejected,
}

impl Outcome {
    /// Every outcome the learner counts.
    pub const LEARNER: [Outcome; 4] = [Outcome::Accepted, Outcome::Stale, Outcome::Expired, Outcome::Rejected];
    /// Every outcome an actor counts.
    pub const ACTOR: [Outcome; 3] = [Outcome::Accepted, Outcome::Stale, Outcome::Rejected];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Stale => "stale",
            Outcome::Expired => "expired",
            Outcome::Rejected => "rejected",
        }
    }

    /// Counts one rollout of this outcome in the learner's [`ROLLOUTS`].
    pub fn count(self) {
        metrics::counter!(ROLLOUTS, "outcome" => self.label()).increment(1);
    }

    /// Counts one rollout of this outcome in the actor's [`ACTOR_ROLLOUTS`].
    pub fn count_sent(self) {
        metrics::counter!(ACTOR_ROLLOUTS, "outcome" => self.label()).increment(1);
    }
}

/// Why the update guard skipped a minibatch step (values of the `reason` label of [`SKIPPED_UPDATES`]).
pub mod skip {
    /// The minibatch loss was NaN or infinite.
    pub const NON_FINITE_LOSS: &str = "non_finite_loss";
    /// The global gradient norm was NaN or infinite.
    pub const NON_FINITE_GRADIENT: &str = "non_finite_gradient";
    /// A parameter or optimiser moment was NaN or infinite after the step.
    pub const NON_FINITE_PARAMS: &str = "non_finite_params";
    /// Every reason.
    pub const ALL: [&str; 3] = [NON_FINITE_LOSS, NON_FINITE_GRADIENT, NON_FINITE_PARAMS];
}

/// The process's role, a global label on every metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The learner.
    Learner,
    /// An actor.
    Actor,
}

const SECONDS_FAST: &[f64] = &[1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1];
const SECONDS_SLOW: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
const LAG: &[f64] = &[0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 16.0, 32.0, 64.0];
const ADVANTAGES: &[f64] = &[-100.0, -30.0, -10.0, -3.0, -1.0, -0.3, -0.1, 0.0, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0];
const RETURNS: &[f64] = &[
    -1500.0, -1000.0, -500.0, -300.0, -200.0, -150.0, -110.0, -100.0, -85.0, -50.0, 0.0, 50.0, 90.0, 100.0, 200.0,
    300.0, 400.0, 475.0, 500.0,
];
const LENGTHS: &[f64] = &[10.0, 25.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 400.0, 500.0, 999.0, 1000.0];

/// Histograms and their explicit buckets (rendered as real Prometheus histograms, not summaries).
pub const HISTOGRAMS: &[(&str, &[f64])] = &[
    (POLICY_LAG, LAG),
    (UPDATE_DURATION, SECONDS_SLOW),
    (ADVANTAGE, ADVANTAGES),
    (EPISODE_RETURN, RETURNS),
    (EPISODE_LENGTH, LENGTHS),
    (ACTOR_INFERENCE_LATENCY, SECONDS_FAST),
    (ACTOR_WEIGHT_LATENCY, SECONDS_SLOW),
];

/// Describes (`# HELP`) every metric of `role`.
pub fn describe(role: Role) {
    match role {
        Role::Learner => {
            describe_counter!(ENV_STEPS, Unit::Count, "Env steps trained on.");
            describe_counter!(SAMPLES_TRAINED, Unit::Count, "Samples passed through the PPO epochs.");
            describe_counter!(ROLLOUTS, Unit::Count, "Rollouts received, by outcome.");
            describe_counter!(REJECTED, Unit::Count, "Rejected requests, by reason.");
            describe_counter!(RECEIVED_BYTES, Unit::Bytes, "Bytes of rollout messages received.");
            describe_gauge!(POLICY_VERSION, "Newest published policy version.");
            describe_histogram!(POLICY_LAG, "Policy versions between the learner and a received rollout.");
            describe_gauge!(QUEUE_DEPTH, "Rollouts waiting for the trainer.");
            describe_gauge!(CONNECTED_ACTORS, "Registered actors with an open policy stream.");
            describe_gauge!(REGISTERED_ACTORS, "Actors in the registry (not yet forgotten for idleness).");
            describe_counter!(
                EVICTED_REGISTRATIONS,
                Unit::Count,
                "Never-active registrations evicted for a newer one, by reason."
            );
            describe_histogram!(UPDATE_DURATION, Unit::Seconds, "Duration of one PPO update.");
            describe_gauge!(APPROX_KL, "Approximate KL(old || new) of the last update (k3 estimator).");
            describe_gauge!(KL_TARGET, "KL target of the adaptive penalty or early stop (0: none).");
            describe_gauge!(KL_BETA, "KL penalty coefficient beta (0 for the clipped objective).");
            describe_gauge!(CLIP_FRACTION, "Fraction of samples whose probability ratio left the clip range.");
            describe_gauge!(ENTROPY, "Mean policy entropy of the last update.");
            describe_gauge!(EXPLAINED_VARIANCE, "Explained variance of the value function on the last batch.");
            describe_gauge!(POLICY_LOSS, "Policy loss of the last update.");
            describe_gauge!(VALUE_LOSS, "Value loss of the last update.");
            describe_gauge!(LEARNING_RATE, "Learning rate in use.");
            describe_histogram!(ADVANTAGE, "GAE advantages of trained samples, before normalisation.");
            describe_histogram!(EPISODE_RETURN, "Returns of finished episodes.");
            describe_histogram!(EPISODE_LENGTH, Unit::Count, "Lengths of finished episodes in steps.");
            describe_gauge!(MEAN_RETURN, "Mean return of the last 100 episodes.");
            describe_counter!(SKIPPED_UPDATES, Unit::Count, "Minibatch steps rolled back by the guard, by reason.");
            describe_counter!(FAULTY_ROLLOUTS, Unit::Count, "Rollouts whose rows made a minibatch step non-finite.");
            describe_counter!(CHECKPOINT_FAILURES, Unit::Count, "Checkpoint or model writes that failed.");
            describe_counter!(PROGRESS_WRITE_FAILURES, Unit::Count, "progress.csv rows that could not be written.");
            describe_counter!(
                TENSORBOARD_WRITE_FAILURES,
                Unit::Count,
                "TensorBoard event records that could not be written."
            );
            for r in skip::ALL {
                metrics::counter!(SKIPPED_UPDATES, "reason" => r).absolute(0);
            }
            metrics::counter!(FAULTY_ROLLOUTS).absolute(0);
            metrics::counter!(CHECKPOINT_FAILURES).absolute(0);
            metrics::counter!(PROGRESS_WRITE_FAILURES).absolute(0);
            metrics::counter!(TENSORBOARD_WRITE_FAILURES).absolute(0);
            // Every label value exists from the start, so `rate()` and dashboards see zeros, not gaps.
            for r in reason::ALL {
                metrics::counter!(REJECTED, "reason" => r).absolute(0);
            }
            for o in Outcome::LEARNER {
                metrics::counter!(ROLLOUTS, "outcome" => o.label()).absolute(0);
            }
            for r in evicted::ALL {
                metrics::counter!(EVICTED_REGISTRATIONS, "reason" => r).absolute(0);
            }
        }
        Role::Actor => {
            describe_counter!(ACTOR_ENV_STEPS, Unit::Count, "Env steps produced and delivered to the learner.");
            describe_counter!(ACTOR_ROLLOUTS, Unit::Count, "Rollouts sent, by outcome.");
            describe_histogram!(ACTOR_INFERENCE_LATENCY, Unit::Seconds, "Duration of one batched policy forward pass.");
            describe_histogram!(ACTOR_WEIGHT_LATENCY, Unit::Seconds, "Seconds from policy publication to arrival.");
            describe_counter!(ACTOR_RECONNECTS, Unit::Count, "Re-registrations after a lost connection.");
            describe_gauge!(ACTOR_CONNECTED, "1 while connected to the learner.");
            describe_gauge!(ACTOR_POLICY_VERSION, "Policy version the actor acts with.");
            metrics::counter!(ACTOR_RECONNECTS).absolute(0);
            for o in Outcome::ACTOR {
                metrics::counter!(ACTOR_ROLLOUTS, "outcome" => o.label()).absolute(0);
            }
        }
    }
}

/// Why metrics cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// A histogram's bucket list was rejected.
    #[error("buckets for {name}: {source}")]
    Buckets {
        /// The histogram.
        name: &'static str,
        /// The exporter's error.
        source: metrics_exporter_prometheus::BuildError,
    },
    /// The listener or the recorder could not be installed (for example the port is taken).
    #[error("cannot serve metrics on {}: {source}", addr.map_or("no address".to_string(), |a| a.to_string()))]
    Serve {
        /// The address (none: the recorder alone).
        addr: Option<std::net::SocketAddr>,
        /// The exporter's error.
        source: metrics_exporter_prometheus::BuildError,
    },
    /// Every port of the range [`serve_first_free`] tries is taken.
    #[error("cannot serve metrics on {ip}: every port of {}-{} is taken", ports.start(), ports.end())]
    NoFreePort {
        /// The address the ports were tried on.
        ip: std::net::IpAddr,
        /// The ports tried.
        ports: std::ops::RangeInclusive<u16>,
    },
}

/// The ports an actor tries in turn for its `/metrics` when given no address: it serves on the first free one, so
/// several actors share a host without flags, and Prometheus can scrape the whole range with a static config.
pub const ACTOR_PORTS: std::ops::RangeInclusive<u16> = 9001..=9099;

/// Installs the Prometheus recorder, labelling every metric with `role` and `env`, describes the metrics, and with
/// `addr` serves `/metrics` there (on the current tokio runtime when called inside one, else on a thread of its
/// own); returns the recorder's handle, which renders the same text (the learner's dashboard reads it). Without an
/// address, a thread runs the recorder's upkeep (draining histograms) every 5 s.
pub fn serve(addr: Option<std::net::SocketAddr>, role: Role, env: &str) -> Result<PrometheusHandle, MetricsError> {
    let handle = match addr {
        Some(addr) => install_with_listener(builder(role, env)?.with_http_listener(addr))
            .map_err(|source| MetricsError::Serve { addr: Some(addr), source })?,
        None => {
            let handle =
                builder(role, env)?.install_recorder().map_err(|source| MetricsError::Serve { addr: None, source })?;
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || {
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(5));
                    upkeep.run_upkeep();
                }
            });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start the metrics upkeep thread; histograms grow until scraped");
            }
            handle
        }
    };
    describe(role);
    Ok(handle)
}

/// [`serve`] on the first port of `ports` at `ip` that is free (a port another process listens on is skipped);
/// returns the handle and the address served on. Errors other than a taken port (an `ip` not of this host) stop
/// the search.
pub fn serve_first_free(
    ip: std::net::IpAddr,
    ports: std::ops::RangeInclusive<u16>,
    role: Role,
    env: &str,
) -> Result<(PrometheusHandle, std::net::SocketAddr), MetricsError> {
    let served = first_free(ip, ports, |addr| {
        install_with_listener(builder(role, env)?.with_http_listener(addr))
            .map_err(|source| MetricsError::Serve { addr: Some(addr), source })
    })?;
    describe(role);
    Ok(served)
}

/// Calls `serve_on` with the first address of `ports` at `ip` that is free, and returns what it returned with the
/// address. Each port is probed with a bind of its own first (only its error tells a taken port from other
/// failures); a port taken between the probe and `serve_on`'s bind (another process starting at the same moment)
/// is skipped too.
fn first_free<T>(
    ip: std::net::IpAddr,
    ports: std::ops::RangeInclusive<u16>,
    mut serve_on: impl FnMut(std::net::SocketAddr) -> Result<T, MetricsError>,
) -> Result<(T, std::net::SocketAddr), MetricsError> {
    use metrics_exporter_prometheus::BuildError;
    for port in ports.clone() {
        let addr = std::net::SocketAddr::new(ip, port);
        match std::net::TcpListener::bind(addr) {
            Ok(probe) => drop(probe),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) => {
                let source = BuildError::FailedToCreateHTTPListener(e.to_string());
                return Err(MetricsError::Serve { addr: Some(addr), source });
            }
        }
        match serve_on(addr) {
            Ok(served) => return Ok((served, addr)),
            Err(MetricsError::Serve { source: BuildError::FailedToCreateHTTPListener(_), .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(MetricsError::NoFreePort { ip, ports })
}

/// A builder labelling every metric with `role` and `env`, with the histograms' buckets.
fn builder(role: Role, env: &str) -> Result<PrometheusBuilder, MetricsError> {
    let role_name = match role {
        Role::Learner => "learner",
        Role::Actor => "actor",
    };
    let mut builder = PrometheusBuilder::new().add_global_label("role", role_name).add_global_label("env", env);
    for (name, buckets) in HISTOGRAMS {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(name.to_string()), buckets)
            .map_err(|source| MetricsError::Buckets { name, source })?;
    }
    Ok(builder)
}

/// `PrometheusBuilder::install` (the exporter on the current runtime, else on a thread with a runtime of its own),
/// keeping the recorder's handle.
fn install_with_listener(
    builder: PrometheusBuilder,
) -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    use metrics_exporter_prometheus::BuildError;
    let recorder = if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let (recorder, exporter) = {
            let _entered = runtime.enter();
            builder.build()?
        };
        runtime.spawn(exporter);
        recorder
    } else {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| BuildError::FailedToCreateRuntime(e.to_string()))?;
        let (recorder, exporter) = {
            let _entered = runtime.enter();
            builder.build()?
        };
        std::thread::Builder::new()
            .name("metrics-exporter".into())
            .spawn(move || runtime.block_on(exporter))
            .map_err(|e| BuildError::FailedToCreateRuntime(e.to_string()))?;
        recorder
    };
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)?;
    Ok(handle)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::BuildError;
    use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};

    const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    /// Binds like the exporter does.
    fn listen(addr: SocketAddr) -> Result<TcpListener, MetricsError> {
        TcpListener::bind(addr).map_err(|e| MetricsError::Serve {
            addr: Some(addr),
            source: BuildError::FailedToCreateHTTPListener(e.to_string()),
        })
    }

    /// A port held by a listener, and the free ports after it (as far as they go).
    fn taken_port() -> (TcpListener, u16) {
        let held = TcpListener::bind((LOOPBACK, 0)).expect("bind an ephemeral port");
        let port = held.local_addr().expect("local address").port();
        (held, port)
    }

    #[test]
    fn a_taken_port_is_skipped_for_the_next_free_one() {
        let (_held, port) = taken_port();
        let last = port.saturating_add(50);
        let (listener, addr) = first_free(LOOPBACK, port..=last, listen).expect("a free port after the taken one");
        assert!(addr.port() > port && addr.port() <= last, "{addr} is not after the taken port {port}");
        assert_eq!(listener.local_addr().expect("local address"), addr);
        // The first free port is taken: the same range again gives a later one.
        let (_second, again) = first_free(LOOPBACK, port..=last, listen).expect("another free port");
        assert!(again.port() > addr.port(), "{again} after {addr}");
    }

    #[test]
    fn a_range_of_taken_ports_is_an_error_naming_it() {
        let (_held, port) = taken_port();
        let e = first_free(LOOPBACK, port..=port, listen).expect_err("the only port is taken");
        assert!(matches!(e, MetricsError::NoFreePort { .. }), "{e:?}");
        let text = e.to_string();
        assert!(text.contains(&format!("every port of {port}-{port} is taken")), "{text}");
    }

    #[test]
    fn a_port_lost_between_probe_and_bind_is_skipped() {
        let (_held, port) = taken_port();
        let start = port.saturating_sub(20).max(1024);
        let mut tried = Vec::new();
        // The first free port is "taken" by someone else right after the probe.
        let result = first_free(LOOPBACK, start..=port.saturating_add(20), |addr| {
            tried.push(addr.port());
            if tried.len() == 1 {
                return Err(MetricsError::Serve {
                    addr: Some(addr),
                    source: BuildError::FailedToCreateHTTPListener("Address already in use".into()),
                });
            }
            listen(addr)
        });
        let (_listener, addr) = result.expect("a later free port");
        assert!(tried.len() >= 2 && addr.port() == *tried.last().unwrap() && addr.port() > tried[0], "{tried:?}");
        assert!(!tried.contains(&port), "the held port {port} was handed to the exporter: {tried:?}");
    }

    #[test]
    fn other_errors_stop_the_search() {
        // An address of no interface of this host.
        let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let e = first_free(ip, 9001..=9099, listen).expect_err("not an address of this host");
        assert!(matches!(e, MetricsError::Serve { .. }), "{e:?}");
        let (_held, port) = taken_port();
        let mut calls = 0;
        let e = first_free(LOOPBACK, port.saturating_add(1)..=port.saturating_add(30), |_| -> Result<(), _> {
            calls += 1;
            Err(MetricsError::Serve { addr: None, source: BuildError::FailedToCreateRuntime("no runtime".into()) })
        })
        .expect_err("a fatal error");
        assert!(matches!(e, MetricsError::Serve { source: BuildError::FailedToCreateRuntime(_), .. }), "{e:?}");
        assert_eq!(calls, 1);
    }
}
