//! `learner serve`: the gRPC service in front of the trainer thread, with health, reflection, auth, TLS,
//! periodic and final checkpoints, resume, and graceful shutdown.

pub mod auth;
pub mod handlers;
#[cfg(test)]
mod registration_flood;
mod registry;

use self::auth::TokenAuth;
use self::handlers::{Adoption, LearnerService, RunInfo, Spec};
use crate::config::TrainConfig;
use crate::error::{Error, Result};
use crate::run::progress::Display;
use crate::run::update_loop::LoopOutcome;
use crate::session::{Mode, Session};
use crate::update::trainer::Trainer;
use common::policy_cell::PolicyCell;
use common::wire::pb;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

/// Options of `serve` that are not part of the training config (secrets and files).
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Shared token every call must present (`authorization: Bearer <token>`).
    pub token: Option<String>,
    /// PEM certificate chain and private key: serve TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Continue from the newest checkpoint in the run directory, if there is one.
    pub resume: bool,
    /// Serve the live dashboard here (none: no dashboard).
    pub dashboard_addr: Option<String>,
    /// The Prometheus recorder's handle, for the dashboard's metrics and the run's final `metrics.prom` (none:
    /// metrics are not recorded).
    pub metrics: Option<common::metrics::PrometheusHandle>,
}

/// Where the server is and how to stop it, for in-process use (tests, `train --transport grpc`).
pub struct ServerHandle {
    /// The bound address.
    pub addr: std::net::SocketAddr,
    /// Cancel to shut the learner down gracefully.
    pub shutdown: CancellationToken,
}

/// How the trainer thread gets its trainer.
enum Start {
    /// Built before serving (the spaces are known).
    Ready(Box<Trainer>, Arc<PolicyCell>),
    /// Built from the spaces of the first actor that registers.
    Adopt(crossbeam_channel::Receiver<Adoption>),
}

impl Start {
    /// The trainer and its policy cell; with [`Start::Adopt`], waits for actors' spaces until a trainer can be
    /// built from them (its spec is written to the run directory) or `stop` is cancelled (`None`).
    fn trainer(self, session: &Session, stop: &CancellationToken) -> Option<(Trainer, Arc<PolicyCell>)> {
        let adoptions = match self {
            Start::Ready(trainer, cell) => return Some((*trainer, cell)),
            Start::Adopt(adoptions) => adoptions,
        };
        while !stop.is_cancelled() {
            let Ok(a) = adoptions.recv_timeout(Duration::from_millis(50)) else { continue };
            let mut cfg = session.config().clone();
            cfg.env = cfg.env.with_spaces(&a.observation_space, &a.action_space);
            let built =
                session.adopted_trainer(&cfg).and_then(|trainer| Ok((PolicyCell::new(trainer.snapshot()?), trainer)));
            match built {
                Ok((cell, trainer)) => {
                    let cell = Arc::new(cell);
                    if a.reply.send(Ok(cell.clone())).is_ok() {
                        return Some((trainer, cell));
                    }
                }
                Err(e) => {
                    let _ = a.reply.send(Err(e.to_string()));
                }
            }
        }
        None
    }
}

/// Forgets idle actors every few seconds until `stop`, so the registry and its gauge stay current.
async fn evict_idle_actors(service: Arc<LearnerService>, idle_seconds: f64, stop: CancellationToken) {
    let period = Duration::from_secs_f64((idle_seconds / 4.0).clamp(0.05, 5.0));
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => { service.evict_idle_actors(); }
        }
    }
}

/// Seconds between two log lines about undecodable requests.
const MALFORMED_LOG_INTERVAL_SECS: u64 = 10;
static MALFORMED_LOGGED_AT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Counts (and rewrites) the answers to request bytes that never reached a handler, telling them apart by status
/// code and reason, never by message text: OUT_OF_RANGE without a rejection reason is tonic's size limit (no
/// handler of ours answers OUT_OF_RANGE) and becomes RESOURCE_EXHAUSTED with the reason `oversized`; a `malformed`
/// rejection comes from the codec ([`common::grpc_codec`]) and is counted and logged (at most once per
/// [`MALFORMED_LOG_INTERVAL_SECS`]). Such failures are answered trailers-only, so the status is in the headers;
/// `grpc-message` is percent-encoded on the wire.
fn rewrite_decode_errors<B>(mut res: http::Response<B>) -> http::Response<B> {
    use common::metrics::{REJECTED, reason};
    const ESCAPE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');
    let h = res.headers_mut();
    let code = h.get("grpc-status").and_then(|c| c.to_str().ok()).and_then(|c| c.parse::<i32>().ok());
    let why = h.get(common::wire::REASON_KEY).and_then(|r| r.to_str().ok());
    let message = || {
        h.get("grpc-message")
            .map(|m| percent_encoding::percent_decode(m.as_bytes()).decode_utf8_lossy().into_owned())
            .unwrap_or_default()
    };
    match (code.map(tonic::Code::from_i32), why) {
        (Some(tonic::Code::OutOfRange), None) => {
            metrics::counter!(REJECTED, "reason" => reason::OVERSIZED).increment(1);
            let msg = format!("message too large for the learner: {}", message());
            let encoded = percent_encoding::utf8_percent_encode(&msg, ESCAPE).to_string();
            h.insert("grpc-status", http::HeaderValue::from(tonic::Code::ResourceExhausted as i32));
            h.insert(common::wire::REASON_KEY, http::HeaderValue::from_static(reason::OVERSIZED));
            if let Ok(v) = http::HeaderValue::from_str(&encoded) {
                h.insert("grpc-message", v);
            }
        }
        (Some(tonic::Code::InvalidArgument), Some(reason::MALFORMED)) => {
            metrics::counter!(REJECTED, "reason" => reason::MALFORMED).increment(1);
            let now = common::policy::unix_now() as u64;
            let last = MALFORMED_LOGGED_AT.load(std::sync::atomic::Ordering::Relaxed);
            if now >= last + MALFORMED_LOG_INTERVAL_SECS
                && MALFORMED_LOGGED_AT
                    .compare_exchange(
                        last,
                        now,
                        std::sync::atomic::Ordering::Relaxed,
                        std::sync::atomic::Ordering::Relaxed,
                    )
                    .is_ok()
            {
                tracing::warn!(error = %message(), "request could not be decoded (logged at most every 10 s; see proxima_learner_rejected_total{{reason=\"malformed\"}})");
            }
        }
        _ => {}
    }
    res
}

/// Turns off Nagle's algorithm on an accepted connection (tonic's `tcp_nodelay` only covers listeners it binds
/// itself). A policy update's last segment otherwise waited for the actor's delayed ACK: 38 ms per update on
/// loopback, measured by the actors' weight-update latency, which capped one actor at 5.8k env steps/s.
pub fn no_delay(conn: std::io::Result<tokio::net::TcpStream>) -> std::io::Result<tokio::net::TcpStream> {
    if let Ok(stream) = &conn
        && let Err(e) = stream.set_nodelay(true)
    {
        tracing::warn!(error = %e, "cannot set TCP_NODELAY on an actor connection");
    }
    conn
}

/// The server's TLS settings from the PEM files of `--tls-cert` and `--tls-key`, each checked to hold what it should.
fn tls_config(cert: &Path, key: &Path) -> Result<tonic::transport::ServerTlsConfig> {
    use common::wire::{Pem, read_pem};
    let identity = tonic::transport::Identity::from_pem(
        read_pem(cert, "--tls-cert", Pem::Certificate).map_err(Error::Tls)?,
        read_pem(key, "--tls-key", Pem::PrivateKey).map_err(Error::Tls)?,
    );
    Ok(tonic::transport::ServerTlsConfig::new().identity(identity))
}

/// Runs the learner on `listener` until `shutdown` is cancelled or training ends; writes a final checkpoint and,
/// with `opts.metrics`, the run's final metrics once the server has stopped (`metrics.prom`).
pub async fn serve(
    cfg: TrainConfig,
    opts: ServeOptions,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> Result<LoopOutcome> {
    // The TLS files first: a mistake in them should not leave a run directory behind.
    let tls = opts.tls.as_ref().map(|(cert, key)| tls_config(cert, key)).transpose()?;
    let session = Session::open(&cfg, Mode::Serve, opts.resume, opts.metrics.clone())?;
    let run_path = session.path().to_path_buf();
    let run_id = session.path().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let run_info = RunInfo::of(&cfg, run_id);
    let (tx, rx) = crate::queue::rollout_queue(cfg.server.queue_capacity);
    let server_stop = CancellationToken::new();
    let trainer_stop = CancellationToken::new();
    // Either the trainer exists now, or the trainer thread builds it from the first registering actor's spaces.
    let (service, start) = if session.config().env.awaits_actor_spaces() {
        tracing::info!(env = %cfg.env, "waiting for the first actor to register: its spaces become the run's");
        let (adopt_tx, adopt_rx) = crossbeam_channel::bounded(1);
        let service = LearnerService::adopting(run_info, adopt_tx, tx, server_stop.clone());
        (service, Start::Adopt(adopt_rx))
    } else {
        let trainer = session.trainer()?;
        let (observation_space, action_space) = session.config().env.spaces()?;
        let policies = Arc::new(PolicyCell::new(trainer.snapshot()?));
        let spec = Spec { observation_space, action_space, policies: policies.clone() };
        (LearnerService::new(run_info, spec, tx, server_stop.clone()), Start::Ready(Box::new(trainer), policies))
    };
    let service = Arc::new(service);
    tokio::spawn(evict_idle_actors(service.clone(), cfg.server.actor_idle_seconds, server_stop.clone()));
    session.dashboard().set_actors(service.clone());
    if let Some(addr) = &opts.dashboard_addr {
        crate::dashboard::start(addr, session.dashboard().clone(), server_stop.clone()).await;
    }

    // The trainer thread: trains until told to stop, then writes the final checkpoint.
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Result<LoopOutcome>>();
    {
        let stop = trainer_stop.clone();
        let display = Display::log(Duration::from_secs_f64(cfg.log_interval_seconds));
        std::thread::Builder::new()
            .name("trainer".into())
            .spawn(move || {
                let outcome = match start.trainer(&session, &stop) {
                    Some((mut trainer, cell)) => session.run(&mut trainer, &rx, &cell, display, &stop),
                    None => Ok(LoopOutcome::default()),
                };
                let _ = done_tx.send(outcome);
            })
            .map_err(|e| Error::Internal(format!("cannot start trainer thread: {e}")))?;
    }

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<pb::learner_server::LearnerServer<LearnerService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(common::wire::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::Internal(format!("reflection service: {e}")))?;
    let max = cfg.server.max_message_bytes;
    let learner = tonic::service::interceptor::InterceptedService::new(
        pb::learner_server::LearnerServer::from_arc(service)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
        TokenAuth::new(opts.token.clone()),
    );
    // Keepalive pings notice actors that vanished without closing their connection (cut cables, killed VMs).
    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)));
    if let Some(tls) = tls {
        builder = builder.tls_config(tls).map_err(|e| Error::Tls(format!("tls: {}", common::wire::with_causes(&e))))?;
    }
    let addr = listener.local_addr().map_err(Error::io("listener"))?;
    tracing::info!(%addr, tls = opts.tls.is_some(), auth = opts.token.is_some(), "learner serving");
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(no_delay);
    let server = builder
        .layer(tower::util::MapResponseLayer::new(rewrite_decode_errors))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(learner)
        .serve_with_incoming_shutdown(incoming, server_stop.clone().cancelled_owned());
    let server = tokio::spawn(server);

    let mut done_rx = done_rx;
    let finished = tokio::select! {
        _ = shutdown.cancelled() => None,
        r = &mut done_rx => Some(r),
    };
    tracing::info!("learner shutting down");
    health.set_not_serving::<pb::learner_server::LearnerServer<LearnerService>>().await;
    server_stop.cancel();
    trainer_stop.cancel();
    let grace = Duration::from_secs_f64(cfg.server.shutdown_grace_seconds.max(0.0));
    let outcome = match finished {
        Some(r) => r.map_err(|_| Error::Internal("trainer thread vanished".into()))?,
        None => match tokio::time::timeout(grace, done_rx).await {
            Ok(r) => r.map_err(|_| Error::Internal("trainer thread vanished".into()))?,
            Err(_) => Err(Error::Internal(format!("the update did not finish within {grace:?}; exiting without it"))),
        },
    };
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "server ended with an error"),
        Ok(Err(e)) => tracing::warn!(error = %e, "server task failed"),
        _ => {}
    }
    // The server has stopped (or had its 5 s to): requests no longer change the totals.
    if let Some(metrics) = &opts.metrics {
        crate::run::dir::write_final_metrics(&run_path, metrics);
    }
    outcome
}

/// Binds `cfg.server.listen` (or `addr`) and runs [`serve`] on a background task; for in-process use.
pub async fn spawn(
    cfg: TrainConfig,
    opts: ServeOptions,
    addr: &str,
) -> Result<(ServerHandle, tokio::task::JoinHandle<Result<LoopOutcome>>)> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(Error::io(addr))?;
    let local = listener.local_addr().map_err(Error::io(addr))?;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve(cfg, opts, listener, shutdown.clone()));
    Ok((ServerHandle { addr: local, shutdown }, task))
}

/// Asks the gRPC health service of the learner at `addr` whether it is serving; an error says why not (another
/// status, unreachable, or no answer within `timeout`).
pub async fn check_health(
    addr: &str,
    tls: Option<tonic::transport::ClientTlsConfig>,
    timeout: std::time::Duration,
) -> Result<()> {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
    let check = async {
        let mut endpoint = tonic::transport::Endpoint::from_shared(addr.to_string())
            .map_err(|e| Error::Unavailable(format!("bad learner URL {addr:?}: {e}")))?;
        if let Some(tls) = tls {
            endpoint = endpoint.tls_config(tls).map_err(|e| Error::Unavailable(format!("tls: {e}")))?;
        }
        let channel =
            endpoint.connect().await.map_err(|e| Error::Unavailable(format!("health check of {addr} failed: {e}")))?;
        let service = "ppo.v1.Learner".to_string();
        let resp = HealthClient::new(channel)
            .check(HealthCheckRequest { service })
            .await
            .map_err(|e| Error::Unavailable(format!("health check of {addr} failed: {e}")))?;
        match resp.into_inner().status() {
            ServingStatus::Serving => Ok(()),
            other => Err(Error::Unavailable(format!("learner at {addr} is {other:?}"))),
        }
    };
    tokio::time::timeout(timeout, check)
        .await
        .map_err(|_| Error::Unavailable(format!("health check of {addr} timed out")))?
}
