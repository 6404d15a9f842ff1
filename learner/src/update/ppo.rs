//! The PPO update: minibatch epochs over one batch with the clipped or the KL-penalty objective.
//!
//! The minibatch step reads like CleanRL's `ppo.py`, with its names: log-ratio, ratio, approximate KL and clip
//! fraction, advantage normalisation, policy loss, (clipped) value loss, entropy, total loss, backward, grad-norm
//! clip, optimiser step.
//!
//! Defence against poisoned data, in both backends: the log-ratio is clamped to ±[`MAX_LOG_RATIO`] before `exp`
//! (no gradient flows through a clamped ratio), and [`run_epochs`] is a guard: a step whose loss or gradient norm
//! is not finite, or that would leave a non-finite parameter or Adam moment, is not applied; the rows to blame are
//! found per rollout and leave the update.

use crate::config::Objective;
use common::ids::ActorId;
use common::metrics as m;
use rand::Rng;
use rand::seq::SliceRandom;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};

/// Bound of `|log π − log μ|` before `exp`: the ratio stays within `e^±20` (about 4.9e8), so no batch can overflow
/// it, while any ratio PPO actually trains on (within a few tenths of 1) is untouched.
pub const MAX_LOG_RATIO: f64 = 20.0;

/// The rows of a batch that came from one rollout.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RowSource {
    /// The actor that sent the rollout.
    pub actor_id: ActorId,
    /// Its rows in the batch.
    pub rows: Range<usize>,
}

/// One batch of training data in host memory, rows in sample order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostBatch {
    /// `[B, obs_dim]` (normalised) observations.
    pub obs: Vec<f32>,
    /// `[B, action_dim]` actions; Discrete as the index in f32.
    pub actions: Vec<f32>,
    /// `[B]` behaviour log-probabilities.
    pub log_probs: Vec<f32>,
    /// `[B]` GAE advantages (not normalised).
    pub advantages: Vec<f32>,
    /// `[B]` value targets (`advantages + values`).
    pub returns: Vec<f32>,
    /// `[B]` behaviour values.
    pub values: Vec<f32>,
    /// Which rows came from which rollout (empty: one anonymous source), to name the actor behind a skipped step.
    pub sources: Vec<RowSource>,
    /// For a recurrent model: how the rows form sequences (`None`: memoryless, rows are independent).
    pub seq: Option<SeqLayout>,
}

/// A recurrent model's batch as sequences: each env's `T` steps of one rollout are one sequence, replayed from the
/// state the actor had before its first step, the state reset to zero where an episode starts inside it.
/// Minibatches are sets of whole sequences, rows time-major (`t·B + b`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeqLayout {
    /// `T`: rows per sequence (every rollout's `num_steps`).
    pub steps: usize,
    /// Values of one state.
    pub state_dim: usize,
    /// Each sequence's row at `t = 0` and the distance between its rows (its rollout's `num_envs`).
    pub sequences: Vec<(usize, usize)>,
    /// `[sequences, state_dim]` each sequence's state before its first row.
    pub initial_states: Vec<f32>,
    /// `[rows]` the row starts an episode (its incoming state is zero).
    pub starts: Vec<bool>,
}

impl SeqLayout {
    /// Appends the rows of the sequences `seqs` to `idx`, time-major: every sequence's first row, then every
    /// second row, and so on.
    pub fn rows_of(&self, seqs: &[u32], idx: &mut Vec<u32>) {
        for t in 0..self.steps {
            idx.extend(seqs.iter().map(|&k| {
                let (first, stride) = self.sequences[k as usize];
                (first + t * stride) as u32
            }));
        }
    }

    /// The sequence whose first row is `row`.
    pub fn sequence_at(&self, row: usize) -> Option<usize> {
        self.sequences.binary_search_by_key(&row, |&(first, _)| first).ok()
    }
}

impl HostBatch {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.log_probs.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.log_probs.is_empty()
    }
}

/// Coefficients of the PPO loss for one update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossCoefs {
    /// Objective.
    pub objective: Objective,
    /// ε of the clipped objective and of value clipping.
    pub clip_coef: f64,
    /// Clip the value loss.
    pub clip_vloss: bool,
    /// Normalise advantages per minibatch.
    pub norm_adv: bool,
    /// Entropy bonus coefficient.
    pub ent_coef: f64,
    /// Value loss coefficient.
    pub vf_coef: f64,
    /// KL penalty coefficient β (`kl_penalty` only).
    pub beta: f64,
}

/// Diagnostics of one minibatch.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MinibatchStats {
    /// Policy loss.
    pub pg_loss: f64,
    /// Value loss (with its 0.5 factor).
    pub v_loss: f64,
    /// Mean entropy.
    pub entropy: f64,
    /// k3 estimator `((r − 1) − log r).mean()`.
    pub approx_kl: f64,
    /// Naive estimator `(−log r).mean()`.
    pub old_approx_kl: f64,
    /// Fraction of samples with `|r − 1| > ε`.
    pub clipfrac: f64,
    /// Total loss.
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
}

/// What the guard did with one minibatch step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StepOutcome {
    /// The step was applied.
    Applied(MinibatchStats),
    /// Nothing changed (parameters, moments and step count are as before), for this reason
    /// (a [`common::metrics::skip`] value).
    Skipped(&'static str),
}

/// Epoch and minibatch settings of one update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochPlan {
    /// Passes over the batch.
    pub num_epochs: usize,
    /// Samples per gradient step.
    pub minibatch_size: usize,
    /// Global gradient-norm limit.
    pub max_grad_norm: f64,
    /// Early stop once an epoch's mean approximate KL exceeds this.
    pub target_kl: Option<f64>,
}

/// Means of the minibatch diagnostics over an update, and how many epochs ran.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EpochStats {
    /// Means over every minibatch step.
    pub mean: MinibatchStats,
    /// Epochs completed (less than planned after a target-KL stop).
    pub epochs: usize,
    /// Gradient steps taken.
    pub steps: usize,
    /// Steps the guard skipped (not applied).
    pub skipped_steps: usize,
    /// Actors whose rollouts were blamed for a skipped step and dropped from the update.
    pub faulty_actors: Vec<ActorId>,
}

/// A backend's minibatch step as the guarded epoch loop sees it.
pub trait MinibatchStep {
    /// The backend's error.
    type Error;

    /// Loss, gradient, clip and optimiser step on rows `idx`, applied only if everything stays finite.
    fn step(&mut self, idx: &[u32]) -> std::result::Result<StepOutcome, Self::Error>;

    /// True when the loss and gradient on rows `idx` alone are finite; changes no parameter.
    fn is_finite_on(&mut self, idx: &[u32]) -> std::result::Result<bool, Self::Error>;
}

/// One log line per skip reason per process; the counter has the totals.
static SKIP_LOGGED: [AtomicBool; 3] = [AtomicBool::new(false), AtomicBool::new(false), AtomicBool::new(false)];

/// Counts a skipped step and logs the first of each kind.
fn record_skip(reason: &'static str) {
    metrics::counter!(m::SKIPPED_UPDATES, "reason" => reason).increment(1);
    let kind = m::skip::ALL.iter().position(|r| *r == reason).unwrap_or(0);
    if !SKIP_LOGGED[kind].swap(true, Ordering::Relaxed) {
        tracing::warn!(
            reason,
            "minibatch step skipped and rolled back (logged once per reason; see proxima_learner_skipped_updates_total)"
        );
    }
}

/// After a skipped step on `idx`: the rollouts whose rows alone give a non-finite loss or gradient. Their actors
/// are logged and counted, and their rows are marked in `banned` so they leave the rest of the update.
fn blame<S: MinibatchStep>(
    idx: &[u32],
    sources: &[RowSource],
    banned: &mut [bool],
    stepper: &mut S,
    out: &mut EpochStats,
) -> std::result::Result<(), S::Error> {
    for source in sources {
        let rows: Vec<u32> = idx.iter().copied().filter(|&i| source.rows.contains(&(i as usize))).collect();
        if rows.is_empty() || stepper.is_finite_on(&rows)? {
            continue;
        }
        banned[source.rows.clone()].iter_mut().for_each(|b| *b = true);
        out.faulty_actors.push(source.actor_id);
        metrics::counter!(m::FAULTY_ROLLOUTS).increment(1);
        tracing::warn!(
            actor_id = source.actor_id.0,
            rows = source.rows.len(),
            "a rollout of this actor made the loss or gradient non-finite; its rows leave this update"
        );
    }
    Ok(())
}

/// Runs the minibatch epochs over `batch`: shuffles its rows (or, for a recurrent model, its sequences: a
/// minibatch is `minibatch_size / T` whole sequences, rows time-major) with `rng` every epoch and hands each
/// minibatch's indices to `stepper`. A skipped step is counted (`proxima_learner_skipped_updates_total`), the
/// rollouts of `sources` to blame for it are found and dropped from the remaining minibatches, and the epochs go
/// on; the diagnostics average the applied steps only.
pub fn run_epochs<S: MinibatchStep>(
    batch: &HostBatch,
    plan: &EpochPlan,
    rng: &mut impl Rng,
    stepper: &mut S,
) -> std::result::Result<EpochStats, S::Error> {
    let (n, sources) = (batch.len(), &batch.sources);
    // Rows, or sequences, and how many of them make a minibatch.
    let (units, per_minibatch) = match &batch.seq {
        None => (n, plan.minibatch_size),
        Some(seq) => (seq.sequences.len(), plan.minibatch_size / seq.steps.max(1)),
    };
    let mut order: Vec<u32> = (0..units as u32).collect();
    let mut sum = MinibatchStats::default();
    let mut out = EpochStats::default();
    let mut banned = vec![false; n];
    let (mut rows, mut kept) = (Vec::new(), Vec::with_capacity(plan.minibatch_size));
    for _ in 0..plan.num_epochs {
        order.shuffle(rng);
        let mut epoch_kl = 0.0;
        let mut epoch_steps = 0;
        for chunk in order.chunks(per_minibatch.max(1)) {
            let chunk = match &batch.seq {
                None => chunk,
                Some(seq) => {
                    rows.clear();
                    seq.rows_of(chunk, &mut rows);
                    &rows[..]
                }
            };
            let idx = if out.faulty_actors.is_empty() {
                chunk
            } else {
                kept.clear();
                kept.extend(chunk.iter().copied().filter(|&i| !banned[i as usize]));
                &kept[..]
            };
            if idx.is_empty() {
                continue;
            }
            let s = match stepper.step(idx)? {
                StepOutcome::Applied(s) => s,
                StepOutcome::Skipped(reason) => {
                    record_skip(reason);
                    out.skipped_steps += 1;
                    // Rows are to blame for a non-finite loss or gradient; a non-finite parameter after a finite
                    // step is the optimiser's, and probing rows could not find it.
                    if reason != m::skip::NON_FINITE_PARAMS {
                        let idx = idx.to_vec();
                        blame(&idx, sources, &mut banned, stepper, &mut out)?;
                    }
                    continue;
                }
            };
            epoch_kl += s.approx_kl;
            epoch_steps += 1;
            sum.pg_loss += s.pg_loss;
            sum.v_loss += s.v_loss;
            sum.entropy += s.entropy;
            sum.approx_kl += s.approx_kl;
            sum.old_approx_kl += s.old_approx_kl;
            sum.clipfrac += s.clipfrac;
            sum.loss += s.loss;
            sum.grad_norm += s.grad_norm;
        }
        out.steps += epoch_steps;
        out.epochs += 1;
        if plan.target_kl.is_some_and(|t| epoch_kl / epoch_steps.max(1) as f64 > t) {
            break;
        }
    }
    // No applied step (all skipped): the diagnostics are undefined, not zero.
    let k = if out.steps == 0 { f64::NAN } else { out.steps as f64 };
    out.mean = MinibatchStats {
        pg_loss: sum.pg_loss / k,
        v_loss: sum.v_loss / k,
        entropy: sum.entropy / k,
        approx_kl: sum.approx_kl / k,
        old_approx_kl: sum.old_approx_kl / k,
        clipfrac: sum.clipfrac / k,
        loss: sum.loss / k,
        grad_norm: sum.grad_norm / k,
    };
    Ok(out)
}

/// `(A − mean) / (std + 1e-8)` with the unbiased std, as CleanRL does per minibatch (skipped for one row).
pub fn normalize_advantages(adv: &mut [f32], enabled: bool) {
    let n = adv.len();
    if !enabled || n < 2 {
        return;
    }
    let mean = adv.iter().map(|&a| a as f64).sum::<f64>() / n as f64;
    let var = adv.iter().map(|&a| (a as f64 - mean).powi(2)).sum::<f64>() / (n as f64 - 1.0);
    let (mean, denom) = (mean as f32, (var.sqrt() + 1e-8) as f32);
    adv.iter_mut().for_each(|a| *a = (*a - mean) / denom);
}

/// The log-ratio `log π − log μ` clamped to ±[`MAX_LOG_RATIO`].
pub fn clamped_log_ratio(log_prob: f32, behaviour_log_prob: f32) -> f32 {
    (log_prob - behaviour_log_prob).clamp(-MAX_LOG_RATIO as f32, MAX_LOG_RATIO as f32)
}

/// The k3 estimator of KL(behaviour ‖ current) of one sample, `(ρ − 1) − log ρ`.
pub fn k3(ratio: f32, logratio: f32) -> f32 {
    (ratio - 1.0) - logratio
}

/// The adaptive KL rule of Schulman et al. 2017: double β when the measured KL exceeds 1.5 × target, halve it
/// when the KL is below target / 1.5.
pub fn adapt_beta(beta: f64, kl: f64, target: f64) -> f64 {
    if kl > 1.5 * target {
        beta * 2.0
    } else if kl < target / 1.5 {
        beta / 2.0
    } else {
        beta
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn adaptive_beta_rule() {
        assert_eq!(adapt_beta(1.0, 0.016, 0.01), 2.0);
        assert_eq!(adapt_beta(1.0, 0.006, 0.01), 0.5);
        assert_eq!(adapt_beta(1.0, 0.01, 0.01), 1.0);
        assert_eq!(adapt_beta(1.0, 0.015, 0.01), 1.0); // exactly 1.5 × target stays
    }
}
