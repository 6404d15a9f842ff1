//! The trainer loop shared by local and served training: gather a batch of rollouts from the channel, update,
//! publish the new policy, log progress, checkpoint, and stop at the step budget, the target return or on request.

use crate::checkpoint::Checkpointer;
use crate::error::Result;
use crate::progress::{ProgressCsv, progress_line};
use crate::trainer::Trainer;
use common::policy_cell::PolicyCell;
use common::rollout::Rollout;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How the loop ended.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoopOutcome {
    /// Env steps trained on (including steps from before a resume).
    pub env_steps: u64,
    /// Seconds since the loop started.
    pub wall_seconds: f64,
    /// Final policy version.
    pub policy_version: u64,
    /// Mean return of the last 100 episodes at the end.
    pub mean_return: Option<f64>,
    /// Env steps at which the target return was reached.
    pub target_reached_at: Option<u64>,
}

/// Where the loop writes besides the policy cell.
pub struct LoopOutputs<'a> {
    /// `progress.csv`.
    pub csv: &'a mut ProgressCsv,
    /// Periodic checkpoints (every `checkpoint_every` updates), if enabled.
    pub checkpoints: Option<(&'a Checkpointer, u64)>,
}

/// Trains on rollouts from `rx` until the budget or target is reached, `stop` is set, or every sender is gone.
pub fn run(
    trainer: &mut Trainer,
    rx: &Receiver<Rollout>,
    cell: &PolicyCell,
    out: LoopOutputs,
    stop: &AtomicBool,
) -> Result<LoopOutcome> {
    let cfg = trainer.config().clone();
    let batch_size = cfg.batch_size();
    let started = Instant::now();
    let mut outcome =
        LoopOutcome { env_steps: trainer.env_steps(), policy_version: trainer.version(), ..Default::default() };
    let mut updates = 0u64;
    'training: while trainer.env_steps() < cfg.total_steps {
        let mut rollouts = Vec::new();
        let mut steps = 0;
        while steps < batch_size {
            if stop.load(Ordering::Relaxed) {
                break 'training;
            }
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(r) => {
                    steps += r.len();
                    rollouts.push(r);
                }
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break 'training,
            }
        }
        let report = trainer.update(rollouts)?;
        cell.publish(trainer.snapshot()?);
        updates += 1;
        let wall = started.elapsed().as_secs_f64();
        out.csv.append(&report, wall)?;
        tracing::info!("{}", progress_line(&report, wall));
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
            checkpoints.save(trainer)?;
        }
        if let (Some(target), Some(m)) = (cfg.target_return, report.mean_return)
            && m >= target
        {
            outcome.target_reached_at = Some(report.env_steps);
            break;
        }
    }
    outcome.wall_seconds = started.elapsed().as_secs_f64();
    Ok(outcome)
}
