//! The fused CPU backend: one flat parameter vector, the PPO loss's gradient derived by hand and pushed through
//! [`common::net`]'s MLP backward pass, Adam on the flat vector. No tensor graph, no per-op allocation.
//!
//! Gradients of the loss `pg − c_ent·H̄ + c_v·L_v` over a minibatch of `M` rows, with `ρ = exp(log π − log μ)`:
//! - clipped objective: `∂pg/∂log π_i = −Â_i ρ_i / M` unless the clipped term is the larger one (then 0), with
//!   PyTorch's (and candle's) rule that a tie between the two terms splits the gradient between them;
//! - KL penalty: `∂pg/∂log π_i = (−Â_i ρ_i + β(ρ_i − 1)) / M`;
//! - Categorical: `∂log π(a)/∂z_k = [k = a] − p_k`, `∂H/∂z_k = −p_k (log p_k + H)`;
//! - Gaussian: `∂log π/∂μ_j = (a_j − μ_j)/σ_j²`, `∂log π/∂log σ_j = ((a_j − μ_j)/σ_j)² − 1`, `∂H/∂log σ_j = 1`;
//! - value: `∂(½ mean max((v − R)², (v_c − R)²))/∂v`, `v_c = V + clamp(v − V, −ε, ε)`, ties split likewise.

use super::Backend;
use crate::config::Objective;
use crate::error::Result;
use crate::update::optim::{AdamState, FlatAdam, clip_grad_norm_flat};
use crate::update::ppo::{
    EpochPlan, EpochStats, HostBatch, LossCoefs, MAX_LOG_RATIO, MinibatchStats, MinibatchStep, StepOutcome,
    clamped_log_ratio, k3, normalize_advantages, run_epochs,
};
use common::distributions::{
    categorical_entropy, gaussian_entropy, gaussian_log_prob, log_softmax, split_blocks, split_blocks_mut,
};
use common::net::{ActorCriticNet, BodyTrace, Sequences, Tower, Trace, Trunks};
use rand_chacha::ChaCha8Rng;

/// Minibatches smaller than this train both nets on one thread: below it, handing half of the work to the other
/// thread costs more than it saves (measured at minibatch 64: 0.87M samples/s on two threads, 1.14M on one).
const PARALLEL_MIN_ROWS: usize = 128;

/// Observations at least this wide are gathered into a minibatch on the pool's threads (images).
const PARALLEL_GATHER_WIDTH: usize = 1024;

/// Rows per forward pass when the learner asks for values of a whole batch: bounds the convolutions' im2col
/// buffers.
const VALUE_CHUNK_ROWS: usize = 512;

/// Flat parameters, gradients, Adam state and reusable buffers.
pub struct FusedBackend {
    /// The network; its [`Trunks`] are what the backend runs.
    model: ActorCriticNet,
    /// The traces of the shared body, or of the actor's and the critic's bodies (separate trunks with a core).
    bodies: [BodyTrace; 2],
    params: Vec<f32>,
    grads: Vec<f32>,
    adam: FlatAdam,
    mb: Minibatch,
    actor_ws: ActorWorkspace,
    critic_ws: CriticWorkspace,
    /// Two threads that train the actor and the critic net side by side (`None`: one after the other).
    pool: Option<rayon::ThreadPool>,
}

/// The rows of one minibatch.
#[derive(Default)]
struct Minibatch {
    obs: Vec<f32>,
    actions: Vec<f32>,
    old_log_probs: Vec<f32>,
    /// Normalised (when enabled) advantages.
    advantages: Vec<f32>,
    returns: Vec<f32>,
    values: Vec<f32>,
    /// Recurrent models: `[B, state_dim]` the sequences' initial states and `[T·B]` the episode starts.
    state0: Vec<f32>,
    starts: Vec<bool>,
}

/// The actor net's buffers.
#[derive(Default)]
struct ActorWorkspace {
    /// The policy head's trace (a memoryless separate trunk: the actor's whole tower).
    outs: Trace,
    /// `[M]` log-probabilities of the taken actions under the current policy.
    log_probs: Vec<f32>,
    /// `[M]` entropies.
    entropy: Vec<f32>,
    /// `[M, Σ blocks]` log-softmax of each block of logits (Categorical heads).
    log_softmax: Vec<f32>,
    /// `[M, blocks]` entropy of each block (Categorical heads).
    block_entropy: Vec<f32>,
    /// `[M]` ∂loss/∂log π.
    d_log_prob: Vec<f32>,
    /// `[M, head]` ∂loss/∂head.
    d_head: Vec<f32>,
    scratch: Vec<f32>,
}

/// The critic net's buffers.
#[derive(Default)]
struct CriticWorkspace {
    /// The value head's trace (a memoryless separate trunk: the critic's whole tower).
    outs: Trace,
    d_value: Vec<f32>,
    scratch: Vec<f32>,
}

/// The policy part of one minibatch's loss.
struct PolicyTerms {
    pg_loss: f64,
    entropy: f64,
    approx_kl: f64,
    old_approx_kl: f64,
    clipfrac: f64,
}

impl FusedBackend {
    /// The network `net` holding the flat parameters `params`, training its two nets on `threads` threads (1 or
    /// 2).
    pub fn new(net: &ActorCriticNet, params: Vec<f32>, threads: usize) -> Result<Self> {
        net.check_len(&params)?;
        let pool = match threads {
            0 | 1 => None,
            n => Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n.min(2))
                    .thread_name(|i| format!("fused-{i}"))
                    .build()
                    .map_err(|e| crate::Error::Internal(format!("cannot start the training threads: {e}")))?,
            ),
        };
        Ok(Self {
            grads: vec![0.0; params.len()],
            adam: FlatAdam::new(params.len()),
            model: net.clone(),
            bodies: Default::default(),
            params,
            mb: Minibatch::default(),
            actor_ws: ActorWorkspace::default(),
            critic_ws: CriticWorkspace::default(),
            pool,
        })
    }

    /// One minibatch (rows `idx` of `batch`): loss, hand-derived gradient, global grad-norm clip, Adam step;
    /// the step is applied only when the loss, the gradient norm and every new parameter and moment are finite.
    pub fn minibatch_step(
        &mut self,
        batch: &HostBatch,
        idx: &[u32],
        c: &LossCoefs,
        max_grad_norm: f64,
        lr: f64,
    ) -> StepOutcome {
        let mut stats = self.loss_and_gradient(batch, idx, c);
        if !stats.loss.is_finite() {
            return StepOutcome::Skipped(common::metrics::skip::NON_FINITE_LOSS);
        }
        stats.grad_norm = clip_grad_norm_flat(&mut self.grads, max_grad_norm);
        if !stats.grad_norm.is_finite() {
            return StepOutcome::Skipped(common::metrics::skip::NON_FINITE_GRADIENT);
        }
        match self.adam.step(&mut self.params, &self.grads, lr) {
            true => StepOutcome::Applied(stats),
            false => StepOutcome::Skipped(common::metrics::skip::NON_FINITE_PARAMS),
        }
    }

    /// True when the loss and gradient of rows `idx` alone are finite (overwrites only the gradient buffer).
    pub fn is_finite_on(&mut self, batch: &HostBatch, idx: &[u32], c: &LossCoefs) -> bool {
        let stats = self.loss_and_gradient(batch, idx, c);
        stats.loss.is_finite() && self.grads.iter().all(|g| g.is_finite())
    }

    /// The gradient of the last [`FusedBackend::loss_and_gradient`], in the network's flat layout.
    pub fn gradient(&self) -> &[f32] {
        &self.grads
    }

    /// The loss of rows `idx` of `batch` and its diagnostics; leaves the unclipped gradient in `self.grads`. The
    /// actor and critic terms are independent, so from [`PARALLEL_MIN_ROWS`] rows on they run side by side
    /// (`rayon::join`: in parallel inside the backend's pool, in turn outside it).
    pub fn loss_and_gradient(&mut self, batch: &HostBatch, idx: &[u32], c: &LossCoefs) -> MinibatchStats {
        let d = self.model.obs_dim();
        let act_dim = batch.actions.len() / batch.len().max(1);
        let mb = &mut self.mb;
        gather(&batch.obs, d, idx, &mut mb.obs);
        gather(&batch.actions, act_dim, idx, &mut mb.actions);
        gather(&batch.log_probs, 1, idx, &mut mb.old_log_probs);
        gather(&batch.advantages, 1, idx, &mut mb.advantages);
        gather(&batch.returns, 1, idx, &mut mb.returns);
        gather(&batch.values, 1, idx, &mut mb.values);
        gather_sequences(batch, idx, mb);
        normalize_advantages(&mut mb.advantages, c.norm_adv);

        let model = &self.model;
        let (mb, actor_ws, critic_ws) = (&self.mb, &mut self.actor_ws, &mut self.critic_ws);
        let [first, second] = &mut self.bodies;
        let seq = batch.seq.as_ref().map(|s| Sequences { steps: s.steps, state0: &mb.state0, starts: &mb.starts });
        let (policy, v_loss) = match model.trunks() {
            // Two branches on their own spans: side by side. A branch with a body (trunk and core) sends the head's
            // input gradient back through it.
            Trunks::Separate { actor, critic } => {
                let (actor_params, critic_params) = model.split(&self.params);
                let (actor_grads, critic_grads) = model.split_mut(&mut self.grads);
                let mut policy = || {
                    let input = actor.features(actor_params, &mb.obs, idx.len(), seq, 0, first);
                    let body = actor.body.is_some();
                    let terms = policy_loss_and_gradient(
                        model,
                        &actor.head,
                        actor_params,
                        input,
                        mb,
                        c,
                        actor_ws,
                        actor_grads,
                        body,
                    );
                    if let Some(body) = &actor.body {
                        let (d, scratch) = (&mut actor_ws.d_head, &mut actor_ws.scratch);
                        body.backward(actor_params, &mb.obs, &mb.starts, first, d, actor_grads, scratch);
                    }
                    terms
                };
                let mut value = || {
                    let input = critic.features(critic_params, &mb.obs, idx.len(), seq, 1, second);
                    let body = critic.body.is_some();
                    let v_loss = value_loss_and_gradient(
                        &critic.head,
                        critic_params,
                        input,
                        mb,
                        c,
                        critic_ws,
                        critic_grads,
                        body,
                    );
                    if let Some(body) = &critic.body {
                        let (d, scratch) = (&mut critic_ws.d_value, &mut critic_ws.scratch);
                        body.backward(critic_params, &mb.obs, &mb.starts, second, d, critic_grads, scratch);
                    }
                    v_loss
                };
                if idx.len() >= PARALLEL_MIN_ROWS { rayon::join(policy, value) } else { (policy(), value()) }
            }
            // One body: both heads on its features (or its recurrent core's outputs), their input gradients summed
            // and sent back through the core and the trunk (on one thread: the heads share the body's gradient).
            Trunks::Shared { body, policy, value } => common::net::split_products(|| {
                let (params, grads) = (&self.params, &mut self.grads);
                body.forward(params, &mb.obs, idx.len(), seq, 0, first);
                let features = first.output();
                let terms = policy_loss_and_gradient(model, policy, params, features, mb, c, actor_ws, grads, true);
                let v_loss = value_loss_and_gradient(value, params, features, mb, c, critic_ws, grads, true);
                actor_ws.d_head.iter_mut().zip(&critic_ws.d_value).for_each(|(d, v)| *d += v);
                let (d, scratch) = (&mut actor_ws.d_head, &mut actor_ws.scratch);
                body.backward(params, &mb.obs, &mb.starts, first, d, grads, scratch);
                (terms, v_loss)
            }),
        };
        MinibatchStats {
            pg_loss: policy.pg_loss,
            v_loss,
            entropy: policy.entropy,
            approx_kl: policy.approx_kl,
            old_approx_kl: policy.old_approx_kl,
            clipfrac: policy.clipfrac,
            loss: policy.pg_loss - c.ent_coef * policy.entropy + c.vf_coef * v_loss,
            grad_norm: 0.0,
        }
    }
}

/// The policy loss `pg − c_ent·H̄` of `mb` and its gradient w.r.t. the actor's span (`grads`), `actor` run on
/// `input` (the observations, or a shared trunk's features); with `input_grad`, `ws.d_head` ends holding the
/// gradient w.r.t. `input`.
#[allow(clippy::too_many_arguments)]
fn policy_loss_and_gradient(
    model: &ActorCriticNet,
    actor: &Tower,
    params: &[f32],
    input: &[f32],
    mb: &Minibatch,
    c: &LossCoefs,
    ws: &mut ActorWorkspace,
    grads: &mut [f32],
    input_grad: bool,
) -> PolicyTerms {
    let m = mb.old_log_probs.len();
    score(model, actor, params, input, &mb.actions, m, ws);
    let inv_m = 1.0 / m.max(1) as f64;
    let (eps, beta) = (c.clip_coef as f32, c.beta as f32);
    let (mut pg_sum, mut kl_sum, mut old_kl_sum, mut clipped) = (0.0f64, 0.0f64, 0.0f64, 0usize);
    ws.d_log_prob.clear();
    let max_log_ratio = MAX_LOG_RATIO as f32;
    for i in 0..m {
        let logratio = clamped_log_ratio(ws.log_probs[i], mb.old_log_probs[i]);
        // No gradient flows through a clamped log-ratio.
        let raw = ws.log_probs[i] - mb.old_log_probs[i];
        let through_ratio_clamp = if (-max_log_ratio..=max_log_ratio).contains(&raw) { 1.0 } else { 0.0 };
        let ratio = logratio.exp();
        let adv = mb.advantages[i];
        kl_sum += k3(ratio, logratio) as f64;
        old_kl_sum += -logratio as f64;
        clipped += usize::from((ratio - 1.0).abs() > eps);
        // ∂pg/∂log π_i (times M): ∂/∂ρ · ρ for the surrogate, β(ρ − 1) for the k3 KL term.
        let d = match c.objective {
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
        ws.d_log_prob.push(d * through_ratio_clamp * inv_m as f32);
    }
    let approx_kl = kl_sum * inv_m;
    let pg_loss = match c.objective {
        Objective::Clip => pg_sum * inv_m,
        Objective::KlPenalty => pg_sum * inv_m + c.beta * approx_kl,
    };
    let entropy = ws.entropy.iter().map(|&h| h as f64).sum::<f64>() * inv_m;

    let ent = (c.ent_coef * inv_m) as f32;
    ws.d_head.clear();
    match model.head().categorical_blocks() {
        Some(blocks) => {
            let (width, k) = (blocks.iter().sum::<usize>(), blocks.len());
            for (i, &g) in ws.d_log_prob.iter().enumerate() {
                let row = &ws.log_softmax[i * width..(i + 1) * width];
                for (b, log_p) in split_blocks(row, blocks).enumerate() {
                    let (a, h) = (mb.actions[i * k + b] as usize, ws.block_entropy[i * k + b]);
                    ws.d_head.extend(log_p.iter().enumerate().map(|(j, &lp)| {
                        let p = lp.exp();
                        g * (f32::from(u8::from(j == a)) - p) + ent * p * (lp + h)
                    }));
                }
            }
        }
        None => {
            let range = model.log_std().unwrap_or(0..0);
            let log_std = &params[range.clone()];
            let head = ws.outs.output();
            let mut d_log_std = vec![-(c.ent_coef as f32); log_std.len()];
            let inv_vars: Vec<f32> = log_std.iter().map(|&ls| (-2.0 * ls).exp()).collect();
            for (i, &g) in ws.d_log_prob.iter().enumerate() {
                for (j, &inv_var) in inv_vars.iter().enumerate() {
                    let k = i * log_std.len() + j;
                    let diff = mb.actions[k] - head[k];
                    ws.d_head.push(g * diff * inv_var);
                    d_log_std[j] += g * (diff * diff * inv_var - 1.0);
                }
            }
            grads[range].copy_from_slice(&d_log_std);
        }
    }
    actor.backward(params, input, &mut ws.outs, &mut ws.d_head, grads, &mut ws.scratch, input_grad);
    PolicyTerms { pg_loss, entropy, approx_kl, old_approx_kl: old_kl_sum * inv_m, clipfrac: clipped as f64 * inv_m }
}

/// `c_v`-free value loss of `mb` (see [`value_loss_terms`]) and `c_v ·` its gradient w.r.t. the critic's span,
/// `critic` run on `input`; with `input_grad`, `ws.d_value` ends holding the gradient w.r.t. `input`.
#[allow(clippy::too_many_arguments)]
fn value_loss_and_gradient(
    critic: &Tower,
    params: &[f32],
    input: &[f32],
    mb: &Minibatch,
    c: &LossCoefs,
    ws: &mut CriticWorkspace,
    grads: &mut [f32],
    input_grad: bool,
) -> f64 {
    let m = mb.returns.len();
    critic.forward(params, input, m, &mut ws.outs);
    let v_loss = value_loss_terms(ws.outs.output(), &mb.values, &mb.returns, c, &mut ws.d_value);
    critic.backward(params, input, &mut ws.outs, &mut ws.d_value, grads, &mut ws.scratch, input_grad);
    v_loss
}

/// For a recurrent model, the initial states of the sequences of the time-major minibatch `idx` (its first `B`
/// rows are their first rows) and its episode starts into `mb`.
fn gather_sequences(batch: &HostBatch, idx: &[u32], mb: &mut Minibatch) {
    mb.state0.clear();
    mb.starts.clear();
    let Some(seq) = &batch.seq else { return };
    let b = idx.len() / seq.steps.max(1);
    for &row in &idx[..b] {
        // `run_epochs` hands over whole sequences, so the first `B` rows are sequence starts.
        let k = seq.sequence_at(row as usize).unwrap_or(0);
        mb.state0.extend_from_slice(&seq.initial_states[k * seq.state_dim..(k + 1) * seq.state_dim]);
    }
    mb.starts.extend(idx.iter().map(|&i| seq.starts[i as usize]));
}

/// Copies rows `idx` of the `[_, width]` matrix `src` into `dst`; over the pool's threads for large rows (a
/// minibatch of 256 Nature-CNN observations is 29 MB).
fn gather(src: &[f32], width: usize, idx: &[u32], dst: &mut Vec<f32>) {
    use rayon::prelude::*;
    // Resized, not cleared: the buffer keeps its length from one minibatch to the next, so nothing is zeroed.
    dst.resize(idx.len() * width, 0.0);
    let copy = |(row, &i): (&mut [f32], &u32)| row.copy_from_slice(&src[i as usize * width..][..width]);
    if width >= PARALLEL_GATHER_WIDTH && rayon::current_thread_index().is_some() {
        dst.par_chunks_mut(width.max(1)).zip(idx.par_iter()).for_each(copy);
    } else {
        dst.chunks_mut(width.max(1)).zip(idx).for_each(copy);
    }
}

/// Actor forward over `m` rows of `obs`, then the log-probabilities of `actions` and the entropies (plus the
/// log-softmax rows for a Categorical head).
fn score(
    model: &ActorCriticNet,
    actor: &Tower,
    params: &[f32],
    obs: &[f32],
    actions: &[f32],
    m: usize,
    ws: &mut ActorWorkspace,
) {
    actor.forward(params, obs, m, &mut ws.outs);
    let head = ws.outs.output();
    ws.log_probs.clear();
    ws.entropy.clear();
    match model.head().categorical_blocks() {
        Some(blocks) => {
            let (width, k) = (blocks.iter().sum::<usize>(), blocks.len());
            ws.log_softmax.resize(m * width, 0.0);
            ws.block_entropy.clear();
            for (i, (logits, ls)) in head.chunks_exact(width).zip(ws.log_softmax.chunks_exact_mut(width)).enumerate() {
                let (mut log_p, mut entropy) = (0.0f32, 0.0f32);
                for (b, (z, l)) in split_blocks(logits, blocks).zip(split_blocks_mut(ls, blocks)).enumerate() {
                    log_softmax(z, l);
                    let a = (actions[i * k + b] as usize).min(l.len() - 1);
                    log_p += l[a];
                    let h = categorical_entropy(l);
                    ws.block_entropy.push(h);
                    entropy += h;
                }
                ws.log_probs.push(log_p);
                ws.entropy.push(entropy);
            }
        }
        None => {
            let log_std = &params[model.log_std().unwrap_or(0..0)];
            let k = log_std.len();
            let h = gaussian_entropy(log_std);
            let stds: Vec<f32> = log_std.iter().map(|ls| ls.exp()).collect();
            for (mean, action) in head.chunks_exact(k).zip(actions.chunks_exact(k)) {
                ws.log_probs.push(gaussian_log_prob(mean, action, log_std, &stds));
                ws.entropy.push(h);
            }
        }
    }
}

/// `½ mean((v − R)²)`, or with `clip_vloss` `½ mean(max((v − R)², (v_c − R)²))`; writes `c_v · ∂/∂v` to `d_value`.
fn value_loss_terms(value: &[f32], old: &[f32], returns: &[f32], c: &LossCoefs, d_value: &mut Vec<f32>) -> f64 {
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

/// The fused backend's minibatch step over one batch, for the guarded epoch loop.
struct FusedStep<'a> {
    backend: &'a mut FusedBackend,
    batch: &'a HostBatch,
    coefs: &'a LossCoefs,
    max_grad_norm: f64,
    lr: f64,
}

impl MinibatchStep for FusedStep<'_> {
    type Error = crate::Error;

    fn step(&mut self, idx: &[u32]) -> Result<StepOutcome> {
        Ok(self.backend.minibatch_step(self.batch, idx, self.coefs, self.max_grad_norm, self.lr))
    }

    fn is_finite_on(&mut self, idx: &[u32]) -> Result<bool> {
        Ok(self.backend.is_finite_on(self.batch, idx, self.coefs))
    }
}

impl Backend for FusedBackend {
    fn values(&mut self, obs: &[f32], n: usize) -> Result<Vec<f32>> {
        let width = obs.len() / n.max(1);
        let state_dim = self.model.state_dim();
        let mut values = Vec::with_capacity(n);
        let [first, second] = &mut self.bodies;
        for rows in obs.chunks(VALUE_CHUNK_ROWS * width.max(1)) {
            let m = rows.len() / width.max(1);
            // Each row as an episode's first step (a zero state), as `ActorCriticNet::forward` takes it.
            let (state0, starts) = match state_dim {
                0 => (Vec::new(), Vec::new()),
                s => (vec![0.0; m * s], vec![false; m]),
            };
            let seq = (state_dim > 0).then_some(Sequences { steps: 1, state0: &state0, starts: &starts });
            let outs = &mut self.critic_ws.outs;
            match self.model.trunks() {
                Trunks::Separate { critic, .. } => {
                    let params = self.model.split(&self.params).1;
                    let input = critic.features(params, rows, m, seq, 1, second);
                    critic.head.forward(params, input, m, outs);
                }
                Trunks::Shared { body, value, .. } => {
                    body.forward(&self.params, rows, m, seq, 0, first);
                    value.forward(&self.params, first.output(), m, outs);
                }
            }
            values.extend_from_slice(outs.output());
        }
        Ok(values)
    }

    fn run_epochs(
        &mut self,
        batch: &HostBatch,
        coefs: &LossCoefs,
        plan: &EpochPlan,
        lr: f64,
        rng: &mut ChaCha8Rng,
    ) -> Result<EpochStats> {
        let pool = self.pool.take();
        let mut epochs = || {
            let mut stepper = FusedStep { backend: self, batch, coefs, max_grad_norm: plan.max_grad_norm, lr };
            run_epochs(batch, plan, rng, &mut stepper)
        };
        let stats = match &pool {
            Some(pool) => pool.install(epochs),
            None => epochs(),
        };
        self.pool = pool;
        stats
    }

    fn batch_kl(&mut self, batch: &HostBatch) -> Result<f64> {
        let n = batch.len();
        // A recurrent model replays every sequence at once (rows time-major).
        let mut idx = Vec::new();
        let mb = &mut self.mb;
        let (obs, actions, rows) = match &batch.seq {
            None => (&batch.obs, &batch.actions, n),
            Some(seq) => {
                seq.rows_of(&(0..seq.sequences.len() as u32).collect::<Vec<_>>(), &mut idx);
                gather(&batch.obs, self.model.obs_dim(), &idx, &mut mb.obs);
                gather(&batch.actions, batch.actions.len() / n.max(1), &idx, &mut mb.actions);
                gather_sequences(batch, &idx, mb);
                (&mb.obs, &mb.actions, idx.len())
            }
        };
        let seqs = batch.seq.as_ref().map(|s| Sequences { steps: s.steps, state0: &mb.state0, starts: &mb.starts });
        let [first, _] = &mut self.bodies;
        match self.model.trunks() {
            Trunks::Separate { actor, .. } => {
                let params = self.model.split(&self.params).0;
                let input = actor.features(params, obs, rows, seqs, 0, first);
                score(&self.model, &actor.head, params, input, actions, rows, &mut self.actor_ws);
            }
            Trunks::Shared { body, policy, .. } => {
                body.forward(&self.params, obs, rows, seqs, 0, first);
                score(&self.model, policy, &self.params, first.output(), actions, rows, &mut self.actor_ws);
            }
        }
        let old_log_probs: Vec<f32> = match batch.seq {
            Some(_) => idx.iter().map(|&i| batch.log_probs[i as usize]).collect(),
            None => batch.log_probs.clone(),
        };
        let sum: f64 = self
            .actor_ws
            .log_probs
            .iter()
            .zip(&old_log_probs)
            .map(|(&new, &old)| {
                let logratio = clamped_log_ratio(new, old);
                k3(logratio.exp(), logratio) as f64
            })
            .sum();
        Ok(sum / old_log_probs.len().max(1) as f64)
    }

    fn params(&self) -> Result<Vec<f32>> {
        Ok(self.params.clone())
    }

    fn load_params(&mut self, params: &[f32]) -> Result<()> {
        self.model.check_len(params)?;
        self.params.copy_from_slice(params);
        Ok(())
    }

    fn optimizer_state(&self) -> Result<AdamState> {
        Ok(self.adam.state())
    }

    fn optimizer_steps(&self) -> u64 {
        self.adam.steps()
    }

    fn load_optimizer_state(&mut self, state: AdamState) -> Result<()> {
        Ok(self.adam.load(state)?)
    }
}
