//! Local mode (`learner train`): the trainer and N actor samplers in one process, connected by a bounded
//! channel for rollouts and a [`PolicyCell`] for weights; the same pieces the distributed mode uses.

use actor::{PolicyWait, Sampler, SamplerConfig, Stamped, run_sampler};
use common::ids::ActorId;
use common::policy_cell::PolicyCell;
use common::rollout::Rollout;
use learner::config::{ActorsConfig, TrainConfig};
use learner::run::progress::Display;
use learner::run::update_loop::LoopOutcome;
use learner::session::{Mode, Session};
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Why a local run failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The trainer (or the in-process server) failed.
    #[error(transparent)]
    Learner(#[from] learner::Error),
    /// A sampler failed.
    #[error("actor failed: {0}")]
    Actor(#[from] actor::Error),
    /// A thread or the runtime could not start, or a sampler thread panicked.
    #[error("{0}")]
    Internal(String),
    /// Local actors run built-in envs only.
    #[error(
        "{0} is not a built-in env, so `learner train` cannot run its actors; run `learner serve` with the same \
         config and start actors with `proxima-actor --learner URL --env {0}`"
    )]
    NotBuiltin(String),
}

/// The result of a local run.
pub type Result<T> = std::result::Result<T, Error>;

/// Where a local run serves its dashboard (none: nowhere) and the metrics handle it shows.
#[derive(Debug, Clone, Default)]
pub struct DashboardOptions {
    /// Address of the live dashboard.
    pub addr: Option<String>,
    /// The Prometheus recorder's handle.
    pub metrics: Option<common::metrics::PrometheusHandle>,
}

/// The sampler settings of each local actor: `sync` actors wait for every new policy version.
pub fn sampler_config(actors: &ActorsConfig) -> SamplerConfig {
    let policy_wait = if actors.sync { PolicyWait::Forever } else { PolicyWait::Never };
    SamplerConfig { num_envs: actors.num_envs, rollout_steps: actors.rollout_steps, policy_wait }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSummary {
    /// Where config, progress and model were written.
    pub run_dir: PathBuf,
    /// Env steps trained on.
    pub env_steps: u64,
    /// Wall-clock seconds from start to the last update.
    pub wall_seconds: f64,
    /// Final policy version.
    pub policy_version: u64,
    /// Mean return over the last `return_window` episodes at the end.
    pub mean_return: Option<f64>,
    /// Env steps at which `target_return` was first reached, if it was.
    pub target_reached_at: Option<u64>,
}

impl TrainSummary {
    fn new(run_dir: PathBuf, o: LoopOutcome) -> Self {
        Self {
            run_dir,
            env_steps: o.env_steps,
            wall_seconds: o.wall_seconds,
            policy_version: o.policy_version,
            mean_return: o.mean_return,
            target_reached_at: o.target_reached_at,
        }
    }
}

/// Trains until `total_steps`, `target_return`, or `stop`, writing the run directory as `serve` does (progress,
/// TensorBoard, periodic and final checkpoints, model, plot); with `resume`, continues the run's newest checkpoint
/// (see [`Mode::Local`] for which run). With `dashboard`, serves the live dashboard there (and its metrics from the
/// handle).
pub fn train(
    cfg: &TrainConfig,
    resume: bool,
    stop: CancellationToken,
    dashboard: &DashboardOptions,
) -> Result<TrainSummary> {
    if !cfg.env.is_builtin() {
        return Err(Error::NotBuiltin(cfg.env.id.clone()));
    }
    let session = Session::open(cfg, Mode::Local, resume, dashboard.metrics.clone())?;
    let mut trainer = session.trainer()?;
    let dashboard_stop = CancellationToken::new();
    let _stop_dashboard = dashboard_stop.clone().drop_guard();
    if let Some(addr) = &dashboard.addr {
        learner::dashboard::start_on_thread(addr, session.dashboard().clone(), dashboard_stop);
    }
    let cell = Arc::new(PolicyCell::new(trainer.snapshot()?));
    let (tx, rx) = crossbeam_channel::bounded::<Rollout>(2 * cfg.actors.count);
    let samplers_stop = CancellationToken::new();
    let mut workers = Vec::with_capacity(cfg.actors.count);
    for i in 0..cfg.actors.count {
        let seed = common::seed::derive(cfg.seed, "actor", i as u64);
        let sampler = Sampler::new(&cfg.env.id, &sampler_config(&cfg.actors), seed)?;
        let (cell, tx, stop, model) = (cell.clone(), tx.clone(), samplers_stop.clone(), trainer.net().spec().clone());
        let handle = std::thread::Builder::new()
            .name(format!("sampler-{i}"))
            .spawn(move || {
                run_sampler(sampler, &model, &cell, &Stamped { sink: tx, actor_id: ActorId(i as u64) }, &stop)
            })
            .map_err(|e| Error::Internal(format!("cannot start sampler thread: {e}")))?;
        workers.push(handle);
    }
    drop(tx);
    tracing::info!(run_dir = %session.path().display(), env = %cfg.env, actors = cfg.actors.count, "training started");

    let display = Display::for_terminal(cfg.total_steps, std::time::Duration::from_secs_f64(cfg.log_interval_seconds));
    let rx = learner::queue::QueueReceiver::from(rx);
    let mut outcome = session
        .run(&mut trainer, &rx, &cell, display, &stop)
        .map(|o| TrainSummary::new(session.path().to_path_buf(), o))
        .map_err(Error::from);
    samplers_stop.cancel();
    drop(rx);
    for w in workers {
        match w.join() {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if outcome.is_ok() => outcome = Err(e.into()),
            Ok(Err(_)) => {}
            Err(_) => outcome = Err(Error::Internal("a sampler thread panicked".into())),
        }
    }
    outcome
}

/// Like [`train`], but the local actors talk to the trainer over loopback gRPC: the distributed system on one
/// machine, exercising the network path.
pub fn train_over_grpc(
    cfg: &TrainConfig,
    resume: bool,
    stop: CancellationToken,
    dashboard: &DashboardOptions,
) -> Result<TrainSummary> {
    if !cfg.env.is_builtin() {
        return Err(Error::NotBuiltin(cfg.env.id.clone()));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the async runtime: {e}")))?;
    let mut cfg = cfg.clone();
    if cfg.run_name.is_none() {
        cfg.run_name = Some(learner::session::run_name(&cfg, Mode::Local, resume)?);
    }
    runtime.block_on(async move {
        let opts = learner::server::ServeOptions {
            dashboard_addr: dashboard.addr.clone(),
            metrics: dashboard.metrics.clone(),
            resume,
            ..Default::default()
        };
        let (server, task) = learner::server::spawn(cfg.clone(), opts, "127.0.0.1:0").await?;
        let actors_stop = tokio_util::sync::CancellationToken::new();
        let mut actors = Vec::new();
        for i in 0..cfg.actors.count {
            let opts = actor::client::ActorOptions {
                num_envs: Some(cfg.actors.num_envs),
                rollout_steps: Some(cfg.actors.rollout_steps),
                name: format!("local-{i}"),
                ..actor::client::ActorOptions::new(format!("http://{}", server.addr), cfg.env.id.clone())
            };
            actors.push(tokio::spawn(actor::client::run(opts, actors_stop.clone())));
        }
        let watch_stop = {
            let token = server.shutdown.clone();
            tokio::spawn(async move {
                stop.cancelled().await;
                token.cancel();
            })
        };
        let outcome = task.await.map_err(|e| Error::Internal(format!("learner task failed: {e}")))?;
        watch_stop.abort();
        actors_stop.cancel();
        for a in actors {
            if let Ok(Err(e)) = a.await {
                tracing::warn!(error = %e, "local actor failed");
            }
        }
        let run_dir = cfg.runs_dir.join(cfg.run_name.clone().unwrap_or_default());
        Ok(TrainSummary::new(run_dir, outcome?))
    })
}
