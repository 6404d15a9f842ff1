//! Local mode (`learner train`): the trainer and N actor samplers in one process, connected by a bounded
//! channel for rollouts and a [`PolicyCell`] for weights; the same pieces the distributed mode uses.

use actor::{PolicyWait, Sampler, SamplerConfig, Stamped, run_sampler};
use common::ids::ActorId;
use common::policy_cell::PolicyCell;
use common::rollout::Rollout;
use learner::config::{ActorsConfig, TrainConfig};
use learner::dashboard::{Dashboard, DashboardSink, RunInfo as DashboardRun};
use learner::run::dir::RunDir;
use learner::run::progress::{Display, ProgressCsv};
use learner::run::update_loop::{self, LoopOutcome, LoopOutputs};
use learner::update::trainer::Trainer;
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

/// Trains until `total_steps`, `target_return`, or `stop`; then writes the final model.
/// With `dashboard`, serves the live dashboard there (and its metrics from the handle).
pub fn train(cfg: &TrainConfig, stop: CancellationToken, dashboard: &DashboardOptions) -> Result<TrainSummary> {
    if !cfg.env.is_builtin() {
        return Err(Error::NotBuiltin(cfg.env.id.clone()));
    }
    let mut trainer = Trainer::new(cfg)?;
    let run = RunDir::create(cfg)?;
    let mut csv = ProgressCsv::create(run.path())?;
    let live = Arc::new(Dashboard::new(DashboardRun::of(cfg, run.path(), "train"), dashboard.metrics.clone()));
    let dashboard_stop = CancellationToken::new();
    let _stop_dashboard = dashboard_stop.clone().drop_guard();
    if let Some(addr) = &dashboard.addr {
        learner::dashboard::start_on_thread(addr, live.clone(), dashboard_stop);
    }
    let mut live = DashboardSink::new(live, 0.0);
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
    tracing::info!(run_dir = %run.path().display(), env = %cfg.env, actors = cfg.actors.count, "training started");

    let mut events =
        learner::run::tensorboard::open(cfg.tensorboard, run.path(), trainer.env_steps(), csv.wall_offset());
    let outputs = LoopOutputs {
        sinks: vec![&mut csv, &mut live, &mut events],
        display: Display::for_terminal(cfg.total_steps, std::time::Duration::from_secs_f64(cfg.log_interval_seconds)),
        checkpoints: None,
    };
    let rx = learner::queue::QueueReceiver::from(rx);
    let mut outcome = update_loop::run(&mut trainer, &rx, &cell, outputs, &stop)
        .map(|o| TrainSummary::new(run.path().to_path_buf(), o))
        .map_err(Error::from);
    samplers_stop.cancel();
    drop(rx);
    for w in workers {
        match w.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) if outcome.is_ok() => outcome = Err(e.into()),
            Ok(Err(_)) => {}
            Err(_) => outcome = Err(Error::Internal("a sampler thread panicked".into())),
        }
    }
    run.write_model(&trainer.weights()?)?;
    if let Err(e) = learner::run::plot::plot_run(run.path()) {
        tracing::warn!(error = %e, "could not draw progress.png");
    }
    outcome
}

/// Like [`train`], but the local actors talk to the trainer over loopback gRPC: the distributed system on one
/// machine, exercising the network path.
pub fn train_over_grpc(
    cfg: &TrainConfig,
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
    cfg.run_name
        .get_or_insert_with(|| format!("{}-seed{}-grpc-{}", cfg.env, cfg.seed, common::policy::unix_now() as u64));
    runtime.block_on(async move {
        let opts = learner::server::ServeOptions {
            dashboard_addr: dashboard.addr.clone(),
            metrics: dashboard.metrics.clone(),
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
