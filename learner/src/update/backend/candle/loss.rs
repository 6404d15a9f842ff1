//! The PPO loss on candle tensors (CleanRL's `ppo.py`, line for line): the candle backend differentiates it with
//! autograd. The fused backend's hand-derived gradient of the same loss is in `backend::fused`.

use super::model::ActorCritic;
use super::optim::{Adam, clip_grad_norm};
use crate::config::Objective;
use crate::update::ppo::{HostBatch, LossCoefs, MAX_LOG_RATIO, MinibatchStats, StepOutcome};
use candle_core::{DType, Device, Result, Tensor};
use common::metrics as m;

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

    /// Copies `host` to `device`; Categorical actions become u32 indices (`[B]` for one block, `[B, k]` for `k`).
    pub fn from_host(host: &HostBatch, discrete: bool, device: &Device) -> Result<Batch> {
        let n = host.len();
        let actions = if discrete {
            let indices = host.actions.iter().map(|a| *a as u32).collect::<Vec<u32>>();
            match host.actions.len() / n.max(1) {
                0 | 1 => Tensor::from_vec(indices, n, device)?,
                k => Tensor::from_vec(indices, (n, k), device)?,
            }
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

fn scalar(t: &Tensor) -> Result<f64> {
    t.to_dtype(DType::F64)?.to_scalar::<f64>()
}

/// The PPO loss of one minibatch; returns the loss tensor (to differentiate) and its diagnostics.
pub fn minibatch_loss(model: &ActorCritic, mb: &Batch, c: &LossCoefs) -> Result<(Tensor, MinibatchStats)> {
    let eval = model.evaluate(&mb.obs, &mb.actions)?;
    let (newlogprob, entropy, newvalue) = (eval.log_prob, eval.entropy, eval.value);
    let logratio = (&newlogprob - &mb.log_probs)?.clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)?;
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

/// Loss, backward, global grad-norm clip and one Adam step, applied only when the loss, the gradient norm and
/// every updated parameter and moment are finite.
pub fn minibatch_step(
    model: &ActorCritic,
    optimizer: &mut Adam,
    mb: &Batch,
    c: &LossCoefs,
    max_grad_norm: f64,
) -> Result<StepOutcome> {
    let (loss, mut stats) = minibatch_loss(model, mb, c)?;
    if !stats.loss.is_finite() {
        return Ok(StepOutcome::Skipped(m::skip::NON_FINITE_LOSS));
    }
    let mut grads = loss.backward()?;
    stats.grad_norm = clip_grad_norm(optimizer.vars(), &mut grads, max_grad_norm)?;
    if !stats.grad_norm.is_finite() {
        return Ok(StepOutcome::Skipped(m::skip::NON_FINITE_GRADIENT));
    }
    Ok(match optimizer.step(&grads)? {
        true => StepOutcome::Applied(stats),
        false => StepOutcome::Skipped(m::skip::NON_FINITE_PARAMS),
    })
}

/// True when the loss and gradient of minibatch `mb` are finite (a probe: nothing is updated).
pub fn minibatch_is_finite(model: &ActorCritic, optimizer: &Adam, mb: &Batch, c: &LossCoefs) -> Result<bool> {
    let (loss, stats) = minibatch_loss(model, mb, c)?;
    if !stats.loss.is_finite() {
        return Ok(false);
    }
    let mut grads = loss.backward()?;
    Ok(clip_grad_norm(optimizer.vars(), &mut grads, f64::INFINITY)?.is_finite())
}

/// k3 estimate of KL(old ‖ new) over the whole batch under the current parameters.
pub fn batch_kl(model: &ActorCritic, batch: &Batch) -> Result<f64> {
    let eval = model.evaluate(&batch.obs, &batch.actions)?;
    let logratio = (eval.log_prob - &batch.log_probs)?.clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)?;
    scalar(&((logratio.exp()? - 1.0)? - logratio)?.mean_all()?)
}
