//! `learner serve`: the gRPC service in front of the trainer thread, with health, reflection, auth, TLS,
//! periodic and final checkpoints, resume, and graceful shutdown.

use crate::auth::TokenAuth;
use crate::checkpoint::{self, Checkpointer};
use crate::config::TrainConfig;
use crate::error::{Error, Result};
use crate::progress::{Display, ProgressCsv};
use crate::run_dir::RunDir;
use crate::service::{LearnerService, RunInfo};
use crate::trainer::Trainer;
use crate::training::{self, LoopOutcome, LoopOutputs};
use common::policy_cell::PolicyCell;
use common::rollout::Rollout;
use common::wire::pb;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
}

/// Where the server is and how to stop it, for in-process use (tests, `train --transport grpc`).
pub struct ServerHandle {
    /// The bound address.
    pub addr: std::net::SocketAddr,
    /// Cancel to shut the learner down gracefully.
    pub shutdown: CancellationToken,
}

/// The newest checkpoint of `cfg`'s run, or a fresh trainer; says which in the log.
fn initial_trainer(cfg: &TrainConfig, checkpoints: &Checkpointer, resume: bool) -> Result<Trainer> {
    match checkpoints.latest()? {
        Some(path) if resume => {
            let t = checkpoint::load(&path, cfg)?;
            tracing::info!(path = %path.display(), version = t.version(), env_steps = t.env_steps(), "resumed");
            Ok(t)
        }
        Some(path) => Err(Error::Checkpoint {
            path,
            reason: "the run directory already has checkpoints; pass --resume to continue it or pick another run"
                .into(),
        }),
        None => {
            if resume {
                tracing::info!(dir = %checkpoints.dir().display(), "no checkpoint to resume from; starting a fresh run");
            }
            Ok(Trainer::new(cfg)?)
        }
    }
}

/// Maps tonic's "decoded message length too large" (OUT_OF_RANGE) to RESOURCE_EXHAUSTED with our message, so
/// every oversized message is answered the same way, and counts it. `grpc-message` is percent-encoded on the wire.
fn oversize_to_resource_exhausted<B>(mut res: http::Response<B>) -> http::Response<B> {
    const ESCAPE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');
    let h = res.headers_mut();
    if h.get("grpc-status").is_none_or(|s| s != "11") {
        return res;
    }
    let message = h
        .get("grpc-message")
        .map(|m| percent_encoding::percent_decode(m.as_bytes()).decode_utf8_lossy().into_owned())
        .unwrap_or_default();
    if message.contains("message length too large") {
        metrics::counter!(common::metrics::REJECTED, "reason" => common::metrics::reason::OVERSIZED).increment(1);
        let msg = format!("message too large for the learner: {}", message.replace("Error, ", ""));
        let encoded = percent_encoding::utf8_percent_encode(&msg, ESCAPE).to_string();
        h.insert("grpc-status", http::HeaderValue::from_static("8"));
        if let Ok(v) = http::HeaderValue::from_str(&encoded) {
            h.insert("grpc-message", v);
        }
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

/// Runs the learner on `listener` until `shutdown` is cancelled or training ends; writes a final checkpoint.
pub async fn serve(
    cfg: TrainConfig,
    opts: ServeOptions,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> Result<LoopOutcome> {
    let mut run_cfg = cfg.clone();
    run_cfg.run_name.get_or_insert_with(|| format!("{}-seed{}", cfg.env, cfg.seed));
    let run = RunDir::create(&run_cfg)?;
    let checkpoints = Checkpointer::new(run.path().join("checkpoints"), cfg.server.keep_checkpoints)?;
    let mut trainer = initial_trainer(&run_cfg, &checkpoints, opts.resume)?;
    let mut csv = match opts.resume {
        true => ProgressCsv::resume(run.path(), trainer.version())?,
        false => ProgressCsv::create(run.path())?,
    };
    let (obs_dim, action_space) = trainer.spaces();
    let run_info = RunInfo {
        env_id: cfg.env.clone(),
        observation_space: common::env::make(&cfg.env)?.observation_space(),
        action_space: action_space.clone(),
        hidden_sizes: cfg.model.hidden_sizes.clone(),
        rollout_steps: cfg.actors.rollout_steps,
        root_seed: cfg.seed,
        run_id: run.path().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        max_policy_lag: cfg.ppo.max_policy_lag,
    };
    debug_assert_eq!(run_info.observation_space.flat_dim(), obs_dim);
    let cell = Arc::new(PolicyCell::new(trainer.snapshot()?));
    let (tx, rx) = crossbeam_channel::bounded::<Rollout>(cfg.server.queue_capacity);
    let server_stop = CancellationToken::new();
    let service = LearnerService::new(run_info, cell.clone(), tx, server_stop.clone());

    // The trainer thread: trains until told to stop, then writes the final checkpoint.
    let trainer_stop = Arc::new(AtomicBool::new(false));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Result<LoopOutcome>>();
    {
        let (stop, cell, every) = (trainer_stop.clone(), cell.clone(), cfg.server.checkpoint_every);
        std::thread::Builder::new()
            .name("trainer".into())
            .spawn(move || {
                let outputs =
                    LoopOutputs { csv: &mut csv, display: Display::Log, checkpoints: Some((&checkpoints, every)) };
                let outcome = training::run(&mut trainer, &rx, &cell, outputs, &stop);
                let saved = checkpoints.save(&trainer).and_then(|_| run.write_model(&trainer.weights()?));
                let _ = done_tx.send(outcome.and_then(|o| saved.map(|()| o)));
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
        pb::learner_server::LearnerServer::new(service).max_decoding_message_size(max).max_encoding_message_size(max),
        TokenAuth::new(opts.token.clone()),
    );
    // Keepalive pings notice actors that vanished without closing their connection (cut cables, killed VMs).
    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)));
    if let Some((cert, key)) = &opts.tls {
        let read = |p: &PathBuf| std::fs::read(p).map_err(Error::io(p));
        let identity = tonic::transport::Identity::from_pem(read(cert)?, read(key)?);
        builder = builder
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .map_err(|e| Error::Internal(format!("tls: {e}")))?;
    }
    let addr = listener.local_addr().map_err(Error::io("listener"))?;
    tracing::info!(%addr, tls = opts.tls.is_some(), auth = opts.token.is_some(), "learner serving");
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(no_delay);
    let server = builder
        .layer(tower::util::MapResponseLayer::new(oversize_to_resource_exhausted))
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
    trainer_stop.store(true, Ordering::Relaxed);
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
