//! Local mode (`learner train`): the trainer and N actor samplers in one process, connected by a bounded
//! channel for rollouts and a [`PolicyCell`] for weights; the same pieces the distributed mode uses.

use crate::config::TrainConfig;
use crate::error::{Error, Result};
use crate::progress::{ProgressCsv, progress_line};
use crate::run_dir::RunDir;
use crate::trainer::Trainer;
use actor::{Sampler, run_sampler};
use common::policy_cell::PolicyCell;
use common::rollout::Rollout;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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
    /// Mean return over the last 100 episodes at the end.
    pub mean_return: Option<f64>,
    /// Env steps at which `target_return` was first reached, if it was.
    pub target_reached_at: Option<u64>,
}

/// Trains until `total_steps`, `target_return`, or `stop`; then writes the final model.
pub fn train(cfg: &TrainConfig, stop: Arc<AtomicBool>) -> Result<TrainSummary> {
    let mut trainer = Trainer::new(cfg)?;
    let run = RunDir::create(cfg)?;
    let mut csv = ProgressCsv::create(run.path())?;
    let cell = Arc::new(PolicyCell::new(trainer.snapshot()?));
    let (tx, rx) = crossbeam_channel::bounded::<Rollout>(2 * cfg.actors.count);
    let samplers_stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::with_capacity(cfg.actors.count);
    for i in 0..cfg.actors.count {
        let sampler = Sampler::new(&cfg.env, &cfg.actors.sampler(), common::seed::derive(cfg.seed, "actor", i as u64))?;
        let (cell, tx, stop, model) = (cell.clone(), tx.clone(), samplers_stop.clone(), cfg.model.clone());
        let handle = std::thread::Builder::new()
            .name(format!("sampler-{i}"))
            .spawn(move || run_sampler(sampler, &model, i as u64, &cell, &tx, &stop))
            .map_err(|e| Error::Internal(format!("cannot start sampler thread: {e}")))?;
        workers.push(handle);
    }
    drop(tx);
    tracing::info!(run_dir = %run.path().display(), env = %cfg.env, actors = cfg.actors.count, "training started");

    let started = Instant::now();
    let batch_size = cfg.batch_size();
    let mut summary = TrainSummary {
        run_dir: run.path().to_path_buf(),
        env_steps: 0,
        wall_seconds: 0.0,
        policy_version: 0,
        mean_return: None,
        target_reached_at: None,
    };
    let mut outcome = Ok(());
    'training: while trainer.env_steps() < cfg.total_steps {
        let mut rollouts = Vec::new();
        let mut steps = 0;
        while steps < batch_size {
            if stop.load(Ordering::Relaxed) {
                break 'training;
            }
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(r) => {
                    steps += r.len();
                    rollouts.push(r);
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break 'training,
            }
        }
        let report = match trainer.update(rollouts) {
            Ok(r) => r,
            Err(e) => {
                outcome = Err(e);
                break;
            }
        };
        cell.publish(trainer.snapshot()?);
        let wall = started.elapsed().as_secs_f64();
        csv.append(&report, wall)?;
        tracing::info!("{}", progress_line(&report, wall));
        summary.env_steps = report.env_steps;
        summary.wall_seconds = wall;
        summary.policy_version = report.policy_version;
        summary.mean_return = report.mean_return;
        if let (Some(target), Some(m)) = (cfg.target_return, report.mean_return)
            && m >= target
        {
            summary.target_reached_at = Some(report.env_steps);
            break;
        }
    }
    samplers_stop.store(true, Ordering::Relaxed);
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
    outcome.map(|()| summary)
}
