//! The fused CPU backend: one flat parameter vector, the PPO loss's gradient derived by hand and pushed through
//! [`common::dense`]'s MLP backward pass, Adam on the flat vector. No tensor graph, no per-op allocation.
//!
//! Gradients of the loss `pg − c_ent·H̄ + c_v·L_v` over a minibatch of `M` rows, with `ρ = exp(log π − log μ)`:
//! - clipped objective: `∂pg/∂log π_i = −Â_i ρ_i / M` unless the clipped term is the larger one (then 0), with
//!   PyTorch's (and candle's) rule that a tie between the two terms splits the gradient between them;
//! - KL penalty: `∂pg/∂log π_i = (−Â_i ρ_i + β(ρ_i − 1)) / M`;
//! - Categorical: `∂log π(a)/∂z_k = [k = a] − p_k`, `∂H/∂z_k = −p_k (log p_k + H)`;
//! - Gaussian: `∂log π/∂μ_j = (a_j − μ_j)/σ_j²`, `∂log π/∂log σ_j = ((a_j − μ_j)/σ_j)² − 1`, `∂H/∂log σ_j = 1`;
//! - value: `∂(½ mean max((v − R)², (v_c − R)²))/∂v`, `v_c = V + clamp(v − V, −ε, ε)`, ties split likewise.

use super::Backend;
use crate::error::Result;
use crate::optim::{AdamState, FlatAdam, clip_grad_norm_flat};
use crate::ppo::{EpochPlan, EpochStats, HostBatch, LossCoefs, MinibatchStats, run_epochs};
use crate::config::Objective;
use candle_core::{Device, Tensor};
use common::dense::DenseActorCritic;
use common::env::Space;
use common::model::ModelConfig;
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;

/// `0.5 * ln(2π)`.
const HALF_LN_2PI: f32 = 0.918_938_5;

/// Flat parameters, gradients, Adam state and reusable buffers.
pub struct FusedBackend {
    model: DenseActorCritic,
    params: Vec<f32>,
    grads: Vec<f32>,
    adam: FlatAdam,
    ws: Workspace,
}

/// Buffers reused across minibatches.
#[derive(Default)]
struct Workspace {
    obs: Vec<f32>,
    actions: Vec<f32>,
    old_log_probs: Vec<f32>,
    advantages: Vec<f32>,
    returns: Vec<f32>,
    values: Vec<f32>,
    actor_outs: Vec<Vec<f32>>,
    critic_outs: Vec<Vec<f32>>,
    /// `[M]` log-probabilities of the taken actions under the current policy.
    log_probs: Vec<f32>,
    /// `[M]` entropies.
    entropy: Vec<f32>,
    /// `[M, n]` log-softmax of the logits (Categorical).
    log_softmax: Vec<f32>,
    /// `[M]` ∂loss/∂log π.
    d_log_prob: Vec<f32>,
    d_head: Vec<f32>,
    d_value: Vec<f32>,
    scratch: Vec<f32>,
}

impl FusedBackend {
    /// The model with the given named parameters (the candle backend's initial weights, or a checkpoint's).
    pub fn new(
        cfg: &ModelConfig,
        obs_dim: usize,
        space: &Space,
        params: &HashMap<String, Tensor>,
    ) -> std::result::Result<Self, String> {
        let model = DenseActorCritic::new(cfg, obs_dim, space);
        let params = model.flatten(params)?;
        Ok(Self {
            grads: vec![0.0; params.len()],
            adam: FlatAdam::new(params.len(), 1e-5),
            model,
            params,
            ws: Workspace::default(),
        })
    }

    /// One minibatch (rows `idx` of `batch`): loss, hand-derived gradient, global grad-norm clip, Adam step.
    pub fn minibatch_step(
        &mut self,
        batch: &HostBatch,
        idx: &[u32],
        c: &LossCoefs,
        max_grad_norm: f64,
        lr: f64,
    ) -> MinibatchStats {
        let mut stats = self.loss_and_gradient(batch, idx, c);
        stats.grad_norm = clip_grad_norm_flat(&mut self.grads, max_grad_norm);
        self.adam.step(&mut self.params, &self.grads, lr);
        stats
    }

    /// The gradient of the last [`FusedBackend::loss_and_gradient`], by parameter name.
    pub fn gradient(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(self.model.tensors(&self.grads, &Device::Cpu)?)
    }

    /// The loss of rows `idx` of `batch` and its diagnostics; leaves the unclipped gradient in `self.grads`.
    pub fn loss_and_gradient(&mut self, batch: &HostBatch, idx: &[u32], c: &LossCoefs) -> MinibatchStats {
        let m = idx.len();
        let d = self.model.obs_dim();
        let act_dim = batch.actions.len() / batch.len().max(1);
        let ws = &mut self.ws;
        gather(&batch.obs, d, idx, &mut ws.obs);
        gather(&batch.actions, act_dim, idx, &mut ws.actions);
        gather(&batch.log_probs, 1, idx, &mut ws.old_log_probs);
        gather(&batch.advantages, 1, idx, &mut ws.advantages);
        gather(&batch.returns, 1, idx, &mut ws.returns);
        gather(&batch.values, 1, idx, &mut ws.values);
        score(&self.model, &self.params, m, ws);
        self.model.critic().forward(&self.params, &ws.obs, m, &mut ws.critic_outs);

        let inv_m = 1.0 / m.max(1) as f64;
        normalize_advantages(&mut ws.advantages, c.norm_adv);
        let (eps, beta) = (c.clip_coef as f32, c.beta as f32);
        let (mut pg_sum, mut kl_sum, mut old_kl_sum, mut clipped) = (0.0f64, 0.0f64, 0.0f64, 0usize);
        ws.d_log_prob.clear();
        for i in 0..m {
            let logratio = ws.log_probs[i] - ws.old_log_probs[i];
            let ratio = logratio.exp();
            let adv = ws.advantages[i];
            kl_sum += ((ratio - 1.0) - logratio) as f64;
            old_kl_sum += -logratio as f64;
            clipped += usize::from((ratio - 1.0).abs() > eps);
            // ∂pg/∂log π_i (times M): ∂/∂ρ · ρ for the surrogate, β(ρ − 1) for the k3 KL term.
            let d_log_prob = match c.objective {
                Objective::Clip => {
                    let (pg1, pg2) = (-adv * ratio, -adv * ratio.clamp(1.0 - eps, 1.0 + eps));
                    pg_sum += pg1.max(pg2) as f64;
                    let through_clip = if (1.0 - eps..=1.0 + eps).contains(&ratio) { -adv } else { 0.0 };
                    let d_ratio = match pg1.partial_cmp(&pg2) {
                        Some(std::cmp::Ordering::Greater) => -adv,
                        Some(std::cmp::Ordering::Less) => through_clip,
                        _ => 0.5 * (-adv + through_clip),
                    };
                    d_ratio * ratio
                }
                Objective::KlPenalty => {
                    pg_sum += (-adv * ratio) as f64;
                    -adv * ratio + beta * (ratio - 1.0)
                }
            };
            ws.d_log_prob.push(d_log_prob * inv_m as f32);
        }
        let approx_kl = kl_sum * inv_m;
        let pg_loss = match c.objective {
            Objective::Clip => pg_sum * inv_m,
            Objective::KlPenalty => pg_sum * inv_m + c.beta * approx_kl,
        };

        let value = ws.critic_outs.last().map_or(&[][..], Vec::as_slice);
        let v_loss = value_loss_and_grad(value, &ws.values, &ws.returns, c, &mut ws.d_value);
        let entropy = ws.entropy.iter().map(|&h| h as f64).sum::<f64>() * inv_m;
        let loss = pg_loss - c.ent_coef * entropy + c.vf_coef * v_loss;

        // Policy head gradient, then both backward passes.
        let ent = (c.ent_coef * inv_m) as f32;
        match self.model.action_space() {
            Space::Discrete { n } => {
                let n = *n;
                ws.d_head.clear();
                for i in 0..m {
                    let (row, a, h) = (&ws.log_softmax[i * n..(i + 1) * n], ws.actions[i] as usize, ws.entropy[i]);
                    let g = ws.d_log_prob[i];
                    ws.d_head.extend(row.iter().enumerate().map(|(k, &lp)| {
                        let p = lp.exp();
                        g * (f32::from(u8::from(k == a)) - p) + ent * p * (lp + h)
                    }));
                }
            }
            Space::Box { .. } => {
                let range = self.model.log_std().unwrap_or(0..0);
                let log_std = &self.params[range.clone()];
                let head = ws.actor_outs.last().map_or(&[][..], Vec::as_slice);
                let mut d_log_std = vec![-(c.ent_coef as f32); log_std.len()];
                ws.d_head.clear();
                for i in 0..m {
                    let g = ws.d_log_prob[i];
                    for (j, &ls) in log_std.iter().enumerate() {
                        let k = i * log_std.len() + j;
                        let inv_var = (-2.0 * ls).exp();
                        let diff = ws.actions[k] - head[k];
                        ws.d_head.push(g * diff * inv_var);
                        d_log_std[j] += g * (diff * diff * inv_var - 1.0);
                    }
                }
                self.grads[range].copy_from_slice(&d_log_std);
            }
        }
        self.model.actor().backward(
            &self.params,
            &ws.obs,
            m,
            &ws.actor_outs,
            &mut ws.d_head,
            &mut self.grads,
            &mut ws.scratch,
        );
        self.model.critic().backward(
            &self.params,
            &ws.obs,
            m,
            &ws.critic_outs,
            &mut ws.d_value,
            &mut self.grads,
            &mut ws.scratch,
        );
        MinibatchStats {
            pg_loss,
            v_loss,
            entropy,
            approx_kl,
            old_approx_kl: old_kl_sum * inv_m,
            clipfrac: clipped as f64 * inv_m,
            loss,
            grad_norm: 0.0,
        }
    }
}

/// Copies rows `idx` of the `[_, width]` matrix `src` into `dst`.
fn gather(src: &[f32], width: usize, idx: &[u32], dst: &mut Vec<f32>) {
    dst.clear();
    for &i in idx {
        let i = i as usize * width;
        dst.extend_from_slice(&src[i..i + width]);
    }
}

/// `(A − mean) / (std + 1e-8)` with the unbiased std, as CleanRL does per minibatch (skipped for one row).
fn normalize_advantages(adv: &mut [f32], enabled: bool) {
    let n = adv.len();
    if !enabled || n < 2 {
        return;
    }
    let mean = adv.iter().map(|&a| a as f64).sum::<f64>() / n as f64;
    let var = adv.iter().map(|&a| (a as f64 - mean).powi(2)).sum::<f64>() / (n as f64 - 1.0);
    let (mean, denom) = (mean as f32, (var.sqrt() + 1e-8) as f32);
    adv.iter_mut().for_each(|a| *a = (*a - mean) / denom);
}

/// Actor forward over the first `m` rows of `ws.obs`, then the log-probabilities of `ws.actions` and the entropies
/// (plus the log-softmax rows for a Categorical head).
fn score(model: &DenseActorCritic, params: &[f32], m: usize, ws: &mut Workspace) {
    model.actor().forward(params, &ws.obs, m, &mut ws.actor_outs);
    let head = ws.actor_outs.last().map_or(&[][..], Vec::as_slice);
    ws.log_probs.clear();
    ws.entropy.clear();
    match model.action_space() {
        Space::Discrete { n } => {
            let n = *n;
            ws.log_softmax.resize(m * n, 0.0);
            for (i, (logits, ls)) in head.chunks_exact(n).zip(ws.log_softmax.chunks_exact_mut(n)).enumerate() {
                let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let log_z = max + logits.iter().map(|&z| (z - max).exp()).sum::<f32>().ln();
                ls.iter_mut().zip(logits).for_each(|(l, &z)| *l = z - log_z);
                let a = (ws.actions[i] as usize).min(n - 1);
                ws.log_probs.push(ls[a]);
                ws.entropy.push(-ls.iter().map(|&l| l.exp() * l).sum::<f32>());
            }
        }
        Space::Box { .. } => {
            let log_std = &params[model.log_std().unwrap_or(0..0)];
            let k = log_std.len();
            let h: f32 = log_std.iter().map(|&ls| ls + 0.5 + HALF_LN_2PI).sum();
            for (mean, action) in head.chunks_exact(k).zip(ws.actions.chunks_exact(k)) {
                let lp = mean
                    .iter()
                    .zip(action)
                    .zip(log_std)
                    .map(|((&mu, &a), &ls)| {
                        let z = (a - mu) / ls.exp();
                        -0.5 * z * z - ls - HALF_LN_2PI
                    })
                    .sum();
                ws.log_probs.push(lp);
                ws.entropy.push(h);
            }
        }
    }
}

/// `½ mean((v − R)²)`, or with `clip_vloss` `½ mean(max((v − R)², (v_c − R)²))`; writes `c_v · ∂/∂v` to `d_value`.
fn value_loss_and_grad(value: &[f32], old: &[f32], returns: &[f32], c: &LossCoefs, d_value: &mut Vec<f32>) -> f64 {
    let inv_m = 1.0 / value.len().max(1) as f64;
    let scale = (c.vf_coef * inv_m) as f32;
    let eps = c.clip_coef as f32;
    let mut sum = 0.0f64;
    d_value.clear();
    for ((&v, &v_old), &ret) in value.iter().zip(old).zip(returns) {
        let diff = v - ret;
        let unclipped = diff * diff;
        let grad = if c.clip_vloss {
            let delta = v - v_old;
            let clipped_diff = (v_old + delta.clamp(-eps, eps)) - ret;
            let clipped = clipped_diff * clipped_diff;
            let through_clip = if delta.abs() <= eps { clipped_diff } else { 0.0 };
            sum += unclipped.max(clipped) as f64;
            match unclipped.partial_cmp(&clipped) {
                Some(std::cmp::Ordering::Greater) => diff,
                Some(std::cmp::Ordering::Less) => through_clip,
                _ => 0.5 * (diff + through_clip),
            }
        } else {
            sum += unclipped as f64;
            diff
        };
        d_value.push(grad * scale);
    }
    0.5 * sum * inv_m
}

impl Backend for FusedBackend {
    fn values(&mut self, obs: &[f32], n: usize) -> Result<Vec<f32>> {
        self.model.critic().forward(&self.params, obs, n, &mut self.ws.critic_outs);
        Ok(self.ws.critic_outs.last().cloned().unwrap_or_default())
    }

    fn run_epochs(
        &mut self,
        batch: &HostBatch,
        coefs: &LossCoefs,
        plan: &EpochPlan,
        lr: f64,
        rng: &mut ChaCha8Rng,
    ) -> Result<EpochStats> {
        run_epochs(batch.len(), plan, rng, |idx| {
            Ok::<_, crate::Error>(self.minibatch_step(batch, idx, coefs, plan.max_grad_norm, lr))
        })
    }

    fn batch_kl(&mut self, batch: &HostBatch) -> Result<f64> {
        let n = batch.len();
        let ws = &mut self.ws;
        ws.obs.clone_from(&batch.obs);
        ws.actions.clone_from(&batch.actions);
        score(&self.model, &self.params, n, ws);
        let sum: f64 = ws
            .log_probs
            .iter()
            .zip(&batch.log_probs)
            .map(|(&new, &old)| {
                let logratio = new - old;
                ((logratio.exp() - 1.0) - logratio) as f64
            })
            .sum();
        Ok(sum / n.max(1) as f64)
    }

    fn params(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(self.model.tensors(&self.params, &Device::Cpu)?)
    }

    fn load_params(&mut self, params: &HashMap<String, Tensor>) -> std::result::Result<(), String> {
        self.params = self.model.flatten(params)?;
        Ok(())
    }

    fn optimizer_state(&self) -> Result<AdamState> {
        let (m, v) = self.adam.moments();
        let (m, v) = (self.model.tensors(m, &Device::Cpu)?, self.model.tensors(v, &Device::Cpu)?);
        let moments = m.into_iter().zip(v).map(|((name, m), (_, v))| (name, m, v)).collect();
        Ok(AdamState { step: self.adam.steps(), moments })
    }

    fn load_optimizer_state(&mut self, state: AdamState) -> std::result::Result<(), String> {
        let (mut m, mut v) = (HashMap::new(), HashMap::new());
        for (name, mt, vt) in state.moments {
            m.insert(name.clone(), mt);
            v.insert(name, vt);
        }
        let missing = |e: String| format!("optimiser state: {e}");
        let (m, v) = (self.model.flatten(&m).map_err(missing)?, self.model.flatten(&v).map_err(missing)?);
        self.adam.load(state.step, m, v)
    }
}
