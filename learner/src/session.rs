//! One training run, however its rollouts arrive: the run directory, the trainer (fresh, or resumed from the newest
//! checkpoint that loads), and the update loop with every output: `progress.csv`, the dashboard's history,
//! TensorBoard, the log or terminal display, periodic and final checkpoints, `model.safetensors` and
//! `progress.png`. `learner serve` adds only the network in front of it, local `learner train` only its
//! in-process samplers, so both modes write the same run directory.

use crate::config::TrainConfig;
use crate::dashboard::{Dashboard, DashboardSink, RunInfo as DashboardRun};
use crate::error::{Error, Result};
use crate::queue::QueueReceiver;
use crate::run::checkpoint::{self, Checkpointer};
use crate::run::dir::RunDir;
use crate::run::progress::{Display, ProgressCsv};
use crate::run::update_loop::{self, LoopOutcome, LoopOutputs};
use crate::update::trainer::Trainer;
use common::policy_cell::PolicyCell;
use std::path::Path;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Who feeds the run; decides the run directory's default name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `learner serve`: actors over gRPC. The default name, `<env>-seed<seed>`, is stable, so a restarted learner
    /// finds its run (and refuses to start over its checkpoints without `--resume`).
    Serve,
    /// `learner train`: samplers in the process. The default name is `<env>-seed<seed>-<unix time>`, a new run
    /// each time (`-2`, `-3`, ... appended for later runs started in the same second); `--resume` continues the
    /// newest such run of the env and seed that has a checkpoint.
    Local,
}

impl Mode {
    /// The dashboard's name for the mode.
    fn name(self) -> &'static str {
        match self {
            Mode::Serve => "serve",
            Mode::Local => "train",
        }
    }
}

/// An open run: its directory and checkpoints, the config it was created with (run name resolved) and its
/// dashboard.
pub struct Session {
    cfg: TrainConfig,
    run: RunDir,
    checkpoints: Checkpointer,
    resume: bool,
    dashboard: Arc<Dashboard>,
}

impl Session {
    /// Creates (or, with `resume`, reopens) the run directory of `cfg` for `mode` and writes the config into it.
    /// A run whose spaces come from its first actor takes them from the directory's saved config on a resume.
    pub fn open(
        cfg: &TrainConfig,
        mode: Mode,
        resume: bool,
        metrics: Option<common::metrics::PrometheusHandle>,
    ) -> Result<Self> {
        let mut cfg = cfg.clone();
        if cfg.run_name.is_none() {
            cfg.run_name = Some(run_name(&cfg, mode, resume)?);
        }
        if cfg.env.awaits_actor_spaces() && resume {
            cfg.env = RunDir::saved_env(&cfg).unwrap_or(cfg.env);
        }
        let run = RunDir::create(&cfg)?;
        let checkpoints = Checkpointer::new(run.path().join(CHECKPOINTS), cfg.server.keep_checkpoints)?;
        let dashboard = Arc::new(Dashboard::new(DashboardRun::of(&cfg, run.path(), mode.name()), metrics));
        Ok(Self { cfg, run, checkpoints, resume, dashboard })
    }

    /// The run directory.
    pub fn path(&self) -> &Path {
        self.run.path()
    }

    /// The run's config (its run name resolved).
    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }

    /// The run's live dashboard (served by the caller, if at all).
    pub fn dashboard(&self) -> &Arc<Dashboard> {
        &self.dashboard
    }

    /// The trainer to start with: the newest checkpoint that loads with `resume`, else a fresh one.
    pub fn trainer(&self) -> Result<Trainer> {
        initial_trainer(&self.cfg, &self.checkpoints, self.resume)
    }

    /// The trainer for the spaces of the first actor that registered (`cfg` is the run's config completed with
    /// them); the completed config is written to the run directory.
    pub fn adopted_trainer(&self, cfg: &TrainConfig) -> Result<Trainer> {
        cfg.env.spaces()?;
        let trainer = initial_trainer(cfg, &self.checkpoints, self.resume)?;
        self.run.write_config(cfg)?;
        Ok(trainer)
    }

    /// Trains on `rx` until the step budget, the target return, `stop`, or every sender is gone, publishing each
    /// policy to `cell`; then writes the final checkpoint, `model.safetensors` and `progress.png`. A failed final
    /// checkpoint is counted, logged and returned (the updates since the last periodic one would be lost, which a
    /// clean exit would hide); a plot that cannot be drawn is only logged.
    pub fn run(
        &self,
        trainer: &mut Trainer,
        rx: &QueueReceiver,
        cell: &PolicyCell,
        display: Display,
        stop: &CancellationToken,
    ) -> Result<LoopOutcome> {
        log_memory_bounds(&self.cfg, trainer.net().spec());
        let mut csv = match self.resume {
            true => ProgressCsv::resume(self.path(), trainer.version())?,
            false => ProgressCsv::create(self.path())?,
        };
        let mut live = DashboardSink::new(self.dashboard.clone(), csv.wall_offset());
        // TensorBoard: a new event file per start; steps and wall seconds continue like progress.csv's.
        let mut events =
            crate::run::tensorboard::open(self.cfg.tensorboard, self.path(), trainer.env_steps(), csv.wall_offset());
        let outputs = LoopOutputs {
            sinks: vec![&mut csv, &mut live, &mut events],
            display,
            checkpoints: Some((&self.checkpoints, self.cfg.server.checkpoint_every)),
        };
        let outcome = update_loop::run(trainer, rx, cell, outputs, stop);
        let saved =
            self.checkpoints.save(trainer).and_then(|_| self.run.write_model(&trainer.weights()?)).map_err(|e| {
                metrics::counter!(common::metrics::CHECKPOINT_FAILURES).increment(1);
                tracing::error!(error = %e, "final checkpoint failed; the newest earlier checkpoint is intact");
                Error::Internal(format!(
                    "final checkpoint failed: {e}; a resume continues from the newest earlier checkpoint"
                ))
            });
        if let Err(e) = crate::run::plot::plot_run(self.path()) {
            tracing::warn!(error = %e, "could not draw progress.png");
        }
        outcome.and_then(|o| saved.map(|()| o))
    }
}

/// Logs what bounds the learner's memory: the rollout queue (at most `queue_capacity` messages of at most
/// `max_message_bytes` each; images wait in it as bytes) and one update's observations as f32 network input.
fn log_memory_bounds(cfg: &TrainConfig, spec: &common::model::ModelSpec) {
    const MIB: f64 = 1024.0 * 1024.0;
    let queue = cfg.server.queue_capacity * cfg.server.max_message_bytes;
    let batch = cfg.batch_size() * spec.obs_dim * std::mem::size_of::<f32>();
    tracing::info!(
        queue_rollouts = cfg.server.queue_capacity,
        queue_mib_at_most = queue as f64 / MIB,
        batch_steps = cfg.batch_size(),
        batch_obs_mib = batch as f64 / MIB,
        model = %spec.describe(),
        "memory bounds: the rollout queue and one update's observations"
    );
}

/// The run directory's subdirectory of checkpoints.
const CHECKPOINTS: &str = "checkpoints";

/// The run directory's name when the config names none (see [`Mode`]); a resumed local run is the newest of the
/// env and seed that has a checkpoint. A new local run's directory is created here,
/// with `create_dir`, which fails for a name that exists: runs of one env and seed started in the same second (a
/// sweep launched in parallel, or a script's quick succession) get `<stable>-<unix time>`, `<stable>-<unix time>-2`,
/// and so on, never one directory between them.
pub fn run_name(cfg: &TrainConfig, mode: Mode, resume: bool) -> Result<String> {
    // One directory level per run: `MinAtar/Breakout-v1` becomes `MinAtar-Breakout-v1`.
    let stable = format!("{}-seed{}", cfg.env.id.replace('/', "-"), cfg.seed);
    if mode == Mode::Serve {
        return Ok(stable);
    }
    let prefix = format!("{stable}-");
    let newest = resume
        .then(|| std::fs::read_dir(&cfg.runs_dir).ok())
        .flatten()
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|name| Some((local_run_order(name.strip_prefix(&prefix)?)?, name)))
        // Runs without a checkpoint (one whose start failed, say) have nothing to continue.
        .filter(|(_, name)| crate::run::checkpoint::any_in(&cfg.runs_dir.join(name).join(CHECKPOINTS)))
        .max();
    if let Some((_, name)) = newest {
        return Ok(name);
    }
    std::fs::create_dir_all(&cfg.runs_dir).map_err(Error::io(&cfg.runs_dir))?;
    let started = format!("{prefix}{}", common::policy::unix_now() as u64);
    const MAX_PER_SECOND: u32 = 10_000;
    for n in 1..=MAX_PER_SECOND {
        let name = if n == 1 { started.clone() } else { format!("{started}-{n}") };
        let path = cfg.runs_dir.join(&name);
        match std::fs::create_dir(&path) {
            Ok(()) => return Ok(name),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(&path)(e)),
        }
    }
    Err(Error::Internal(format!("{started}: {MAX_PER_SECOND} runs of this env and seed exist for this second")))
}

/// Where a local run's name suffix (`<unix time>` or `<unix time>-<n>`, after `<env>-seed<seed>-`) sorts among
/// the runs of its env and seed; none for another name.
fn local_run_order(suffix: &str) -> Option<(u64, u32)> {
    match suffix.split_once('-') {
        None => Some((suffix.parse().ok()?, 1)),
        Some((time, n)) => Some((time.parse().ok()?, n.parse().ok().filter(|n| *n >= 2)?)),
    }
}

/// The newest checkpoint of `cfg`'s run that loads, or a fresh trainer; says which in the log. A damaged
/// checkpoint (corrupt, truncated, holding NaN) is logged and the next older one tried; when checkpoints exist
/// but none loads, the error names the newest and gives every reason. A checkpoint of another env or model, an
/// unreadable file, and checkpoints without `resume` are errors.
pub(crate) fn initial_trainer(cfg: &TrainConfig, checkpoints: &Checkpointer, resume: bool) -> Result<Trainer> {
    let all = checkpoints.list()?;
    let Some(newest) = all.last().cloned() else {
        if resume {
            tracing::info!(dir = %checkpoints.dir().display(), "no checkpoint to resume from; starting a fresh run");
        }
        return Trainer::new(cfg);
    };
    if !resume {
        return Err(Error::Checkpoint {
            path: newest,
            reason: "the run directory already has checkpoints; pass --resume to continue it or pick another run"
                .into(),
        });
    }
    let mut refused = Vec::new();
    for path in all.iter().rev() {
        match checkpoint::load(path, cfg) {
            Ok(t) if refused.is_empty() => {
                tracing::info!(path = %path.display(), version = t.version(), env_steps = t.env_steps(), "resumed");
                return Ok(t);
            }
            Ok(t) => {
                tracing::warn!(
                    path = %path.display(),
                    version = t.version(),
                    env_steps = t.env_steps(),
                    refused = refused.len(),
                    "resumed from an older checkpoint: fell back past {} newer one(s) that did not load",
                    refused.len()
                );
                return Ok(t);
            }
            // Only damaged files are passed over. A checkpoint of another env or model, or one that cannot be read
            // (permissions, I/O), is an error: falling back past it would silently fork the run's history.
            Err(error @ Error::Checkpoint { .. }) => {
                tracing::warn!(path = %path.display(), %error, "checkpoint refused; trying an older one");
                refused.push(error.to_string());
            }
            Err(error) => return Err(error),
        }
    }
    Err(Error::Checkpoint {
        path: newest,
        reason: format!("none of the run's {} checkpoints loads: {}", refused.len(), refused.join("; ")),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cfg(runs: &Path) -> TrainConfig {
        TrainConfig { runs_dir: runs.to_path_buf(), ..TrainConfig::default() }
    }

    /// Serve's runs keep one name; local runs get a new one each time, and `--resume` finds the newest.
    #[test]
    fn run_names_by_mode() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = cfg(dir.path());
        assert_eq!(run_name(&cfg, Mode::Serve, false).unwrap(), "CartPole-v1-seed1");
        let fresh = run_name(&cfg, Mode::Local, false).unwrap();
        assert!(fresh.starts_with("CartPole-v1-seed1-"), "{fresh}");
        assert!(dir.path().join(&fresh).is_dir(), "a new local run's directory is created with its name");
        let old = ["CartPole-v1-seed1-100", "CartPole-v1-seed1-2000", "CartPole-v1-seed1-x", "CartPole-v1-seed2-9"];
        let runs = tempfile::tempdir().unwrap();
        let cfg = TrainConfig { runs_dir: runs.path().to_path_buf(), ..cfg };
        let with_checkpoint = |name: &str| {
            let dir = runs.path().join(name).join(CHECKPOINTS);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("checkpoint-000000000001.safetensors"), b"").unwrap();
        };
        for name in old {
            with_checkpoint(name);
        }
        // Newer runs without a checkpoint (their start failed) are passed over.
        std::fs::create_dir_all(runs.path().join("CartPole-v1-seed1-3000").join(CHECKPOINTS)).unwrap();
        std::fs::create_dir_all(runs.path().join("CartPole-v1-seed1-2000-3")).unwrap();
        assert_eq!(run_name(&cfg, Mode::Local, true).unwrap(), "CartPole-v1-seed1-2000");
        with_checkpoint("CartPole-v1-seed1-2000-2");
        assert_eq!(run_name(&cfg, Mode::Local, true).unwrap(), "CartPole-v1-seed1-2000-2");
        assert_ne!(run_name(&cfg, Mode::Local, false).unwrap(), "CartPole-v1-seed1-2000-2");
        let minatar = TrainConfig { env: crate::config::EnvConfig::builtin("MinAtar/Breakout-v1"), ..cfg };
        assert_eq!(run_name(&minatar, Mode::Serve, false).unwrap(), "MinAtar-Breakout-v1-seed1");
    }

    /// Local runs of one env and seed started at the same moment (a sweep) each get a directory of their own.
    #[test]
    fn simultaneous_local_runs_get_their_own_directories() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = cfg(&dir.path().join("runs"));
        let names: Vec<String> = std::thread::scope(|s| {
            let started: Vec<_> = (0..8).map(|_| s.spawn(|| run_name(&cfg, Mode::Local, false).unwrap())).collect();
            started.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let distinct: std::collections::HashSet<&String> = names.iter().collect();
        assert_eq!(distinct.len(), names.len(), "{names:?}");
        assert_eq!(std::fs::read_dir(dir.path().join("runs")).unwrap().count(), names.len());
        // Once they have checkpoints, a resume takes the newest: the latest second, then the highest `-n`.
        for name in &names {
            let dir = dir.path().join("runs").join(name).join(CHECKPOINTS);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("checkpoint-000000000001.safetensors"), b"").unwrap();
        }
        let order = |name: &str| local_run_order(name.strip_prefix("CartPole-v1-seed1-").unwrap()).unwrap();
        let newest = names.iter().max_by_key(|n| order(n)).unwrap();
        assert_eq!(&run_name(&cfg, Mode::Local, true).unwrap(), newest, "{names:?}");
    }
}
