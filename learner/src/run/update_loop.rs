//! The trainer loop shared by local and served training: gather a batch of rollouts from the channel, update,
//! publish the new policy, log progress, checkpoint, and stop at the step budget, the target return or on request.

use crate::config::{Objective, TrainConfig};
use crate::error::Result;
use crate::queue::QueueReceiver;
use crate::run::checkpoint::Checkpointer;
use crate::run::progress::{Display, ProgressCsv};
use crate::update::trainer::{Trainer, UpdateReport};
use common::metrics as m;
use common::policy_cell::PolicyCell;
use crossbeam_channel::RecvTimeoutError;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How the loop ended.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoopOutcome {
    /// Env steps trained on (including steps from before a resume).
    pub env_steps: u64,
    /// Seconds since the loop started.
    pub wall_seconds: f64,
    /// Final policy version.
    pub policy_version: u64,
    /// Mean return of the last `return_window` episodes at the end.
    pub mean_return: Option<f64>,
    /// Env steps at which the target return was reached.
    pub target_reached_at: Option<u64>,
}

/// Takes every update's report: `progress.csv`, TensorBoard's event file, the dashboard's history. A sink that
/// cannot write counts and logs the failure itself; training goes on.
pub trait ReportSink {
    /// Records one update, `wall_seconds` after the loop started.
    fn record(&mut self, report: &UpdateReport, wall_seconds: f64);
}

impl ReportSink for ProgressCsv {
    fn record(&mut self, report: &UpdateReport, wall_seconds: f64) {
        self.append(report, wall_seconds);
    }
}

/// Where the loop writes besides the policy cell.
pub struct LoopOutputs<'a> {
    /// `progress.csv` and the other report sinks, in order.
    pub sinks: Vec<&'a mut dyn ReportSink>,
    /// Progress for people.
    pub display: Display,
    /// Periodic checkpoints (every `checkpoint_every` updates), if enabled.
    pub checkpoints: Option<(&'a Checkpointer, u64)>,
}

/// Trains on rollouts from `rx` until the budget or target is reached, `stop` is set, or every sender is gone.
pub fn run(
    trainer: &mut Trainer,
    rx: &QueueReceiver,
    cell: &PolicyCell,
    mut out: LoopOutputs,
    stop: &CancellationToken,
) -> Result<LoopOutcome> {
    let cfg = trainer.config().clone();
    let batch_size = cfg.batch_size();
    let started = Instant::now();
    let mut outcome =
        LoopOutcome { env_steps: trainer.env_steps(), policy_version: trainer.version(), ..Default::default() };
    let mut updates = 0u64;
    let mut logged_shape = None;
    'training: while trainer.env_steps() < cfg.total_steps {
        let mut rollouts = Vec::new();
        let (mut steps, mut expired) = (0, 0);
        while steps < batch_size {
            if stop.is_cancelled() {
                break 'training;
            }
            match rx.recv_timeout(Duration::from_millis(50)) {
                // Too old by now (it waited in the queue while the policy moved on): drop it, keep gathering.
                Ok(r) if trainer.is_stale(&r) => {
                    m::Outcome::Expired.count();
                    expired += 1;
                }
                Ok(r) => {
                    steps += r.len();
                    rollouts.push(r);
                }
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break 'training,
            }
        }
        metrics::gauge!(m::QUEUE_DEPTH).set(rx.len() as f64);
        log_batch_shape(&cfg, steps, rollouts.len(), &mut logged_shape);
        let mut report = trainer.update(rollouts)?;
        report.stale_rollouts += expired;
        record(&report, &cfg);
        cell.publish(trainer.snapshot()?);
        updates += 1;
        let wall = started.elapsed().as_secs_f64();
        for sink in out.sinks.iter_mut() {
            sink.record(&report, wall);
        }
        out.display.update(&report, wall);
        outcome = LoopOutcome {
            env_steps: report.env_steps,
            wall_seconds: wall,
            policy_version: report.policy_version,
            mean_return: report.mean_return,
            target_reached_at: None,
        };
        if let Some((checkpoints, every)) = out.checkpoints
            && every > 0
            && updates.is_multiple_of(every)
        {
            // Failures (disk full, a non-finite trainer) are counted and logged there; training goes on.
            checkpoints.save_periodic(trainer);
        }
        // The target counts only over a full window: "mean of the last 100" never means "of the first 3".
        if let (Some(target), Some(m)) = (cfg.target_return, report.mean_return)
            && report.episodes >= cfg.return_window as u64
            && m >= target
        {
            outcome.target_reached_at = Some(report.env_steps);
            break;
        }
    }
    out.display.finish();
    outcome.wall_seconds = started.elapsed().as_secs_f64();
    Ok(outcome)
}

/// Logs the batch an update trains on when it differs from the config's (actors with other env counts, more or
/// fewer actors than `actors.count`), once per new shape.
fn log_batch_shape(cfg: &TrainConfig, steps: usize, rollouts: usize, logged: &mut Option<(usize, usize)>) {
    let configured = cfg.batch_size();
    if steps == configured || *logged == Some((steps, rollouts)) {
        return;
    }
    *logged = Some((steps, rollouts));
    let mb = cfg.ppo.minibatch_size.max(1);
    tracing::warn!(
        "this update trains on {steps} steps from {rollouts} rollout(s), the config's batch is {configured} \
         (ppo.batch_size, or actors.count {} x actors.num_envs {} x actors.rollout_steps {}): {} minibatches of \
         {mb} per epoch instead of {}",
        cfg.actors.count,
        cfg.actors.num_envs,
        cfg.actors.rollout_steps,
        steps.div_ceil(mb),
        configured.div_ceil(mb),
    );
}

/// Exports one update's measurements as metrics.
fn record(r: &UpdateReport, cfg: &TrainConfig) {
    let e = &r.epochs.mean;
    metrics::counter!(m::ENV_STEPS).increment(r.samples as u64);
    metrics::counter!(m::SAMPLES_TRAINED).increment((r.samples * r.epochs.epochs) as u64);
    metrics::gauge!(m::POLICY_VERSION).set(r.policy_version as f64);
    metrics::histogram!(m::UPDATE_DURATION).record(r.update_seconds);
    metrics::gauge!(m::APPROX_KL).set(r.approx_kl);
    let kl_target = match (cfg.ppo.objective, cfg.ppo.target_kl) {
        (Objective::KlPenalty, _) => cfg.ppo.kl_target,
        (Objective::Clip, t) => t.unwrap_or(0.0),
    };
    metrics::gauge!(m::KL_TARGET).set(kl_target);
    metrics::gauge!(m::KL_BETA).set(r.kl_beta);
    metrics::gauge!(m::CLIP_FRACTION).set(e.clipfrac);
    metrics::gauge!(m::ENTROPY).set(e.entropy);
    if r.explained_variance.is_finite() {
        metrics::gauge!(m::EXPLAINED_VARIANCE).set(r.explained_variance);
    }
    metrics::gauge!(m::POLICY_LOSS).set(e.pg_loss);
    metrics::gauge!(m::VALUE_LOSS).set(e.v_loss);
    metrics::gauge!(m::LEARNING_RATE).set(r.learning_rate);
    if let Some(ret) = r.mean_return {
        metrics::gauge!(m::MEAN_RETURN).set(ret);
    }
}
