//! The PPO update: minibatch epochs over one batch with the clipped or the KL-penalty objective.
//!
//! The minibatch step reads like CleanRL's `ppo.py`, with its names: log-ratio, ratio, approximate KL and clip
//! fraction, advantage normalisation, policy loss, (clipped) value loss, entropy, total loss, backward, grad-norm
//! clip, optimiser step.

use crate::config::Objective;
use crate::optim::{Adam, clip_grad_norm};
use candle_core::{DType, Device, Result, Tensor};
use common::model::ActorCritic;
use rand::Rng;
use rand::seq::SliceRandom;

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

/// One batch of training data on the training device.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `[B, obs_dim]` (normalised) observations.
    pub obs: Tensor,
    /// `[B]` u32 action indices (Discrete) or `[B, d]` f32 actions (Box).
    pub actions: Tensor,
    /// `[B]` behaviour log-probabilities.
    pub log_probs: Tensor,
    /// `[B]` GAE advantages (not normalised).
    pub advantages: Tensor,
    /// `[B]` value targets (`advantages + values`).
    pub returns: Tensor,
    /// `[B]` behaviour values.
    pub values: Tensor,
}

impl Batch {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.log_probs.dims1().unwrap_or(0)
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies `host` to `device`; Discrete actions become u32 indices.
    pub fn from_host(host: &HostBatch, discrete: bool, device: &Device) -> Result<Batch> {
        let n = host.len();
        let actions = if discrete {
            Tensor::from_vec(host.actions.iter().map(|a| *a as u32).collect::<Vec<u32>>(), n, device)?
        } else {
            Tensor::from_slice(&host.actions, (n, host.actions.len() / n.max(1)), device)?
        };
        Ok(Batch {
            obs: Tensor::from_slice(&host.obs, (n, host.obs.len() / n.max(1)), device)?,
            actions,
            log_probs: Tensor::from_slice(&host.log_probs, n, device)?,
            advantages: Tensor::from_slice(&host.advantages, n, device)?,
            returns: Tensor::from_slice(&host.returns, n, device)?,
            values: Tensor::from_slice(&host.values, n, device)?,
        })
    }

    /// The rows at `idx` (u32 `[M]`).
    pub fn select(&self, idx: &Tensor) -> Result<Batch> {
        Ok(Batch {
            obs: self.obs.index_select(idx, 0)?,
            actions: self.actions.index_select(idx, 0)?,
            log_probs: self.log_probs.index_select(idx, 0)?,
            advantages: self.advantages.index_select(idx, 0)?,
            returns: self.returns.index_select(idx, 0)?,
            values: self.values.index_select(idx, 0)?,
        })
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

fn scalar(t: &Tensor) -> Result<f64> {
    t.to_dtype(DType::F64)?.to_scalar::<f64>()
}

/// The PPO loss of one minibatch; returns the loss tensor (to differentiate) and its diagnostics.
pub fn minibatch_loss(model: &ActorCritic, mb: &Batch, c: &LossCoefs) -> Result<(Tensor, MinibatchStats)> {
    let eval = model.evaluate(&mb.obs, &mb.actions)?;
    let (newlogprob, entropy, newvalue) = (eval.log_prob, eval.entropy, eval.value);
    let logratio = (&newlogprob - &mb.log_probs)?;
    let ratio = logratio.exp()?;
    let approx_kl_t = ((&ratio - 1.0)? - &logratio)?.mean_all()?;
    let approx_kl = scalar(&approx_kl_t)?;
    let old_approx_kl = scalar(&logratio.neg()?.mean_all()?)?;
    let clipfrac = scalar(&(&ratio - 1.0)?.abs()?.gt(c.clip_coef)?.to_dtype(DType::F32)?.mean_all()?)?;

    let n = mb.advantages.dims1()?;
    let mb_advantages = if c.norm_adv && n > 1 {
        let mean = mb.advantages.mean_all()?;
        let centred = mb.advantages.broadcast_sub(&mean)?;
        let std = (centred.sqr()?.sum_all()? / (n as f64 - 1.0))?.sqrt()?;
        centred.broadcast_div(&(std + 1e-8)?)?
    } else {
        mb.advantages.clone()
    };

    let pg_loss = match c.objective {
        Objective::Clip => {
            let pg_loss1 = (mb_advantages.neg()? * &ratio)?;
            let pg_loss2 = (mb_advantages.neg()? * ratio.clamp(1.0 - c.clip_coef, 1.0 + c.clip_coef)?)?;
            pg_loss1.maximum(&pg_loss2)?.mean_all()?
        }
        Objective::KlPenalty => ((&mb_advantages * &ratio)?.mean_all()?.neg()? + (approx_kl_t * c.beta)?)?,
    };

    let v_loss_unclipped = (&newvalue - &mb.returns)?.sqr()?;
    let v_loss = if c.clip_vloss {
        let v_clipped = (&mb.values + (&newvalue - &mb.values)?.clamp(-c.clip_coef, c.clip_coef)?)?;
        let v_loss_clipped = (v_clipped - &mb.returns)?.sqr()?;
        (v_loss_unclipped.maximum(&v_loss_clipped)?.mean_all()? * 0.5)?
    } else {
        (v_loss_unclipped.mean_all()? * 0.5)?
    };

    let entropy_loss = entropy.mean_all()?;
    let loss = ((&pg_loss - (&entropy_loss * c.ent_coef)?)? + (&v_loss * c.vf_coef)?)?;
    let stats = MinibatchStats {
        pg_loss: scalar(&pg_loss)?,
        v_loss: scalar(&v_loss)?,
        entropy: scalar(&entropy_loss)?,
        approx_kl,
        old_approx_kl,
        clipfrac,
        loss: scalar(&loss)?,
        grad_norm: 0.0,
    };
    Ok((loss, stats))
}

/// Loss, backward, global grad-norm clip and one Adam step.
pub fn minibatch_step(
    model: &ActorCritic,
    optimizer: &mut Adam,
    mb: &Batch,
    c: &LossCoefs,
    max_grad_norm: f64,
) -> Result<MinibatchStats> {
    let (loss, mut stats) = minibatch_loss(model, mb, c)?;
    let mut grads = loss.backward()?;
    stats.grad_norm = clip_grad_norm(optimizer.vars(), &mut grads, max_grad_norm)?;
    optimizer.step(&grads)?;
    Ok(stats)
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
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EpochStats {
    /// Means over every minibatch step.
    pub mean: MinibatchStats,
    /// Epochs completed (less than planned after a target-KL stop).
    pub epochs: usize,
    /// Gradient steps taken.
    pub steps: usize,
}

/// Runs the minibatch epochs over a batch of `n` samples: shuffles the indices with `rng` every epoch and hands
/// each minibatch's indices to `step`, which takes one gradient step and returns its diagnostics.
pub fn run_epochs<E>(
    n: usize,
    plan: &EpochPlan,
    rng: &mut impl Rng,
    mut step: impl FnMut(&[u32]) -> std::result::Result<MinibatchStats, E>,
) -> std::result::Result<EpochStats, E> {
    let mut order: Vec<u32> = (0..n as u32).collect();
    let mut sum = MinibatchStats::default();
    let mut out = EpochStats::default();
    for _ in 0..plan.num_epochs {
        order.shuffle(rng);
        let mut epoch_kl = 0.0;
        let mut epoch_steps = 0;
        for chunk in order.chunks(plan.minibatch_size.max(1)) {
            let s = step(chunk)?;
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
    let k = out.steps.max(1) as f64;
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

/// k3 estimate of KL(old ‖ new) over the whole batch under the current parameters.
pub fn batch_kl(model: &ActorCritic, batch: &Batch) -> Result<f64> {
    let eval = model.evaluate(&batch.obs, &batch.actions)?;
    let logratio = (eval.log_prob - &batch.log_probs)?;
    scalar(&((logratio.exp()? - 1.0)? - logratio)?.mean_all()?)
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
