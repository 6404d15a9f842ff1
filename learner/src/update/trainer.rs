//! The trainer: one PPO update per batch of rollouts, in the order of CleanRL's `ppo.py` (Huang et al. 2022):
//!
//! 1. **Anneal** (`frac = 1.0 - (iteration - 1.0) / num_iterations; lrnow = frac * args.learning_rate`): the
//!    learning rate and, optionally, the clip range fall linearly with the env steps trained on ([`Schedules`]).
//! 2. **Assemble** (the `with torch.no_grad()` block: `next_value`, `delta`, `lastgaelam`): observations are
//!    normalised, rewards scaled per actor stream, truncated steps bootstrapped with the value of their final
//!    observation, and GAE computes advantages and returns ([`super::gae`]).
//! 3. **Epochs** (`for epoch in range(args.update_epochs)`: shuffle, minibatches, `pg_loss`, `v_loss`,
//!    `entropy_loss`, `loss.backward()`, `clip_grad_norm_`, `optimizer.step()`, the `target_kl` early stop): the
//!    backend runs them ([`super::ppo::run_epochs`] guards each step). The fused backend does each minibatch's
//!    backward pass by hand (gradients listed in `backend::fused`), the candle backend by autograd.
//! 4. **KL rule**: the k3 KL over the whole batch, and for the KL-penalty objective the adaptive β of Schulman et
//!    al. 2017 ([`super::ppo::adapt_beta`]).
//!
//! Then the observation statistics take in the batch and the version advances; episode bookkeeping is
//! [`crate::episodes`]'s.

use crate::config::{ConfigError, Objective, PpoConfig, TrainConfig};
use crate::episodes::EpisodeBook;
use crate::error::{Error, Result};
use crate::update::backend::{self, Backend};
use crate::update::gae::{GaeInput, gae};
use crate::update::optim::AdamState;
use crate::update::ppo::{EpochPlan, EpochStats, HostBatch, LossCoefs, RowSource, SeqLayout, adapt_beta};
use common::env::{Dtype, Space};
use common::ids::{ActorId, PolicyVersion};
use common::model::ModelSpec;
use common::net::{ActorCriticNet, NetTrace, Sequences};
use common::normalize::{ObsNormalizer, RewardScaler, RunningMeanStd};
use common::obs::ObsBuf;
use common::policy::{PolicySnapshot, encode_weights};
use common::rollout::Rollout;
use common::seed;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::{HashMap, VecDeque};

/// Quantiles of the (unnormalised) advantages of one batch.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AdvantageStats {
    /// Mean.
    pub mean: f64,
    /// Standard deviation.
    pub std: f64,
    /// 5th, 25th, 50th, 75th and 95th percentiles.
    pub quantiles: [f64; 5],
    /// Their histogram (TensorBoard's `advantages`).
    pub histogram: Histogram,
}

/// Buckets of a [`Histogram`].
pub const HISTOGRAM_BUCKETS: usize = 30;

/// A histogram of a batch's finite values: what TensorBoard's `HistogramProto` holds (`min`, `max`, `num`, `sum`,
/// `sum_squares` and bucket counts), with [`HISTOGRAM_BUCKETS`] buckets of equal width between `min` and `max`.
/// Bucket 0 holds `[min, limit(0)]`, bucket `i` holds `(limit(i-1), limit(i)]`, as in the proto; see
/// [`Histogram::bucket_limits`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Histogram {
    /// Smallest value (0 when there is none).
    pub min: f64,
    /// Largest value (0 when there is none).
    pub max: f64,
    /// Number of values counted (non-finite ones are left out).
    pub num: u64,
    /// Sum of the values.
    pub sum: f64,
    /// Sum of their squares.
    pub sum_squares: f64,
    /// Values per bucket; they add up to `num`.
    pub counts: [u64; HISTOGRAM_BUCKETS],
}

impl Histogram {
    /// The histogram of the finite values in `values`.
    pub fn of(values: &[f32]) -> Self {
        let finite = || values.iter().filter(|v| v.is_finite()).map(|&v| v as f64);
        let (min, max) = finite().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
        if min > max {
            return Self::default();
        }
        let mut h = Self { min, max, ..Self::default() };
        let width = (max - min) / HISTOGRAM_BUCKETS as f64;
        for v in finite() {
            h.num += 1;
            h.sum += v;
            h.sum_squares += v * v;
            // Upper edges belong to their bucket: `(v - min) / width` in (i, i + 1] is bucket i, `min` itself 0.
            let bucket = if width > 0.0 { ((v - min) / width).ceil() as usize } else { 0 };
            h.counts[bucket.saturating_sub(1).min(HISTOGRAM_BUCKETS - 1)] += 1;
        }
        h
    }

    /// Upper edges of the buckets: `min + (i + 1) * (max - min) / HISTOGRAM_BUCKETS`, the last one exactly `max`.
    pub fn bucket_limits(&self) -> [f64; HISTOGRAM_BUCKETS] {
        let width = (self.max - self.min) / HISTOGRAM_BUCKETS as f64;
        let mut limits = std::array::from_fn(|i| self.min + (i + 1) as f64 * width);
        limits[HISTOGRAM_BUCKETS - 1] = self.max;
        limits
    }
}

/// Everything one update measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpdateReport {
    /// Policy version published by this update.
    pub policy_version: u64,
    /// Env steps trained on so far.
    pub env_steps: u64,
    /// Samples in this update's batch.
    pub samples: usize,
    /// Minibatch diagnostics (means) and epochs run.
    pub epochs: EpochStats,
    /// k3 KL(old ‖ new) over the whole batch after the update.
    pub approx_kl: f64,
    /// KL penalty coefficient used in this update (0 for `clip`).
    pub kl_beta: f64,
    /// Learning rate used.
    pub learning_rate: f64,
    /// Clip range used.
    pub clip_coef: f64,
    /// `1 − Var(returns − values) / Var(returns)` of the batch.
    pub explained_variance: f64,
    /// Advantage distribution.
    pub advantages: AdvantageStats,
    /// Episodes finished so far.
    pub episodes: u64,
    /// Mean return of the last `return_window` episodes (None before the first episode ends).
    pub mean_return: Option<f64>,
    /// Standard deviation of the same episodes' returns.
    pub return_std: Option<f64>,
    /// Mean length of the same episodes.
    pub mean_length: Option<f64>,
    /// Rollouts dropped for policy lag in this update.
    pub stale_rollouts: usize,
    /// Seconds spent in this update.
    pub update_seconds: f64,
}

/// Counters and statistics a checkpoint restores besides the tensors.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainerState {
    /// Env id the model was trained on.
    pub env: String,
    /// Policy version.
    pub version: u64,
    /// Env steps trained on.
    pub env_steps: u64,
    /// Episodes finished.
    pub episodes: u64,
    /// KL penalty coefficient.
    pub beta: f64,
    /// Adam steps taken.
    pub adam_step: u64,
    /// The last episodes' (return, length), oldest first.
    pub recent: Vec<(f64, u32)>,
    /// Reward scaler statistics.
    pub reward_rms: Option<RunningMeanStd>,
    /// The env's observation and action spaces in gymnasium's notation (JSON has no infinite numbers; absent in
    /// checkpoints written before the spaces were recorded).
    #[serde(default)]
    pub spaces: Option<(String, String)>,
}

impl TrainerState {
    /// Fails naming both envs unless the state is of `cfg`'s env, with the same spaces.
    pub fn check_env(&self, cfg: &TrainConfig) -> std::result::Result<(), RestoreError> {
        if self.env != cfg.env.id {
            return Err(RestoreError::Env { saved: self.env.clone(), config: cfg.env.id.clone() });
        }
        let (Some((obs, action)), Ok((cfg_obs, cfg_action))) = (&self.spaces, cfg.env.spaces()) else {
            return Ok(());
        };
        for (which, saved, config) in [("observation", obs, cfg_obs), ("action", action, cfg_action)] {
            if saved.parse::<Space>().ok().as_ref() != Some(&config) {
                return Err(RestoreError::Spaces { which, saved: saved.clone(), config: config.to_string() });
            }
        }
        Ok(())
    }
}

/// Why saved training state does not fit a trainer built from the config.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The state is of another env.
    #[error("it was trained on {saved} but the config says {config}")]
    Env {
        /// The env the state was trained on.
        saved: String,
        /// The config's env.
        config: String,
    },
    /// The state's env has other spaces than the config's.
    #[error("its {which} space is {saved} but the config says {config}")]
    Spaces {
        /// `observation` or `action`.
        which: &'static str,
        /// The checkpoint's space.
        saved: String,
        /// The config's space.
        config: String,
    },
    /// Parameters or optimiser moments of the wrong length.
    #[error("{0}")]
    Backend(#[source] Box<Error>),
    /// Observation or reward normalisation is on in one and off (or of another size) in the other.
    #[error("{0} normalisation differs between checkpoint and config")]
    Normalization(&'static str),
}

/// The learning-rate and clip-range schedules, the loss coefficients and the epoch plan, built once from the
/// config.
#[derive(Debug, Clone)]
struct Schedules {
    learning_rate: f64,
    anneal_lr: bool,
    anneal_clip: bool,
    total_steps: u64,
    /// The loss coefficients at the start (β and the clip range are filled in per update).
    coefs: LossCoefs,
    plan: EpochPlan,
}

impl Schedules {
    fn new(p: &PpoConfig, total_steps: u64) -> Self {
        Self {
            learning_rate: p.learning_rate,
            anneal_lr: p.anneal_lr,
            anneal_clip: p.anneal_clip,
            total_steps,
            coefs: LossCoefs {
                objective: p.objective,
                clip_coef: p.clip_coef,
                clip_vloss: p.clip_vloss,
                norm_adv: p.norm_adv,
                ent_coef: p.ent_coef,
                vf_coef: p.vf_coef,
                beta: 0.0,
            },
            plan: EpochPlan {
                num_epochs: p.num_epochs,
                minibatch_size: p.minibatch_size,
                max_grad_norm: p.max_grad_norm,
                target_kl: p.target_kl,
            },
        }
    }

    /// The learning rate and loss coefficients after `env_steps` steps, with KL coefficient `beta`.
    fn at(&self, env_steps: u64, beta: f64) -> (f64, LossCoefs) {
        let frac = (1.0 - env_steps as f64 / self.total_steps.max(1) as f64).clamp(0.0, 1.0);
        let lr = if self.anneal_lr { self.learning_rate * frac } else { self.learning_rate };
        let clip = self.coefs.clip_coef;
        let clip_coef = if self.anneal_clip { (clip * frac).max(1e-3) } else { clip };
        (lr, LossCoefs { clip_coef, beta, ..self.coefs })
    }
}

/// Rewards scaled by the running std of the discounted return, accumulated per env of each actor (the envs of
/// different actors are different streams).
struct RewardNormalizer {
    scaler: RewardScaler,
    returns: HashMap<ActorId, Vec<f64>>,
}

impl RewardNormalizer {
    /// The scaled rewards of `r`, updating the statistics and the actor's accumulators.
    fn scale(&mut self, r: &Rollout) -> Vec<f32> {
        let mut rewards = r.rewards.clone();
        let acc = self.returns.entry(r.actor_id).or_insert_with(|| vec![0.0; r.num_envs]);
        acc.resize(r.num_envs, 0.0);
        for t in 0..r.num_steps {
            let s = t * r.num_envs..(t + 1) * r.num_envs;
            self.scaler.scale_step(acc, &mut rewards[s.clone()], &r.terminated[s]);
        }
        rewards
    }
}

/// The most policy versions whose observation statistics the trainer keeps for normalising late rollouts.
const SHIPPED_OBS_NORM_KEPT: usize = 16;

/// Model, optimiser, normalisers and counters of one training run.
pub struct Trainer {
    cfg: TrainConfig,
    obs_dim: usize,
    observation_space: Space,
    action_space: Space,
    net: ActorCriticNet,
    backend: Box<dyn Backend>,
    schedules: Schedules,
    obs_norm: Option<ObsNormalizer>,
    /// The observation statistics the latest policy versions shipped with (`(version, statistics)`, oldest first).
    shipped_obs_norm: VecDeque<(u64, ObsNormalizer)>,
    reward_norm: Option<RewardNormalizer>,
    episodes: EpisodeBook,
    version: u64,
    env_steps: u64,
    beta: f64,
    rng: ChaCha8Rng,
}

impl Trainer {
    /// A fresh run: model initialised from the config's seed.
    pub fn new(cfg: &TrainConfig) -> Result<Self> {
        let (observation_space, action_space) = cfg.env.spaces()?;
        let obs_dim = observation_space.flat_dim();
        let spec = ModelSpec::resolve(&cfg.model, &observation_space, &action_space)
            .map_err(|e| ConfigError::Invalid { key: "model", reason: e.to_string() })?;
        let (net, backend) = backend::create(cfg, &spec, seed::derive(cfg.seed, "model", 0))?;
        if cfg.normalize.observations && observation_space.dtype() != Dtype::Float32 {
            let reason = format!(
                "applies to float observations; the {} observations of {} are scaled by 1/255 instead",
                observation_space.dtype().name(),
                observation_space.describe()
            );
            return Err(ConfigError::Invalid { key: "normalize.observations", reason }.into());
        }
        let obs_norm = cfg.normalize.observations.then(|| ObsNormalizer::new(obs_dim, cfg.normalize.obs_clip));
        let mut trainer = Self {
            episodes: EpisodeBook::new(cfg.return_window, cfg.episode_log.as_ref())?,
            schedules: Schedules::new(&cfg.ppo, cfg.total_steps),
            obs_norm,
            shipped_obs_norm: VecDeque::new(),
            reward_norm: cfg
                .normalize
                .rewards
                .then(|| RewardNormalizer { scaler: RewardScaler::new(cfg.ppo.gamma), returns: HashMap::new() }),
            cfg: cfg.clone(),
            obs_dim,
            observation_space,
            action_space,
            net,
            backend,
            version: 0,
            env_steps: 0,
            beta: match cfg.ppo.objective {
                Objective::Clip => 0.0,
                Objective::KlPenalty => cfg.ppo.kl_beta,
            },
            rng: ChaCha8Rng::seed_from_u64(seed::derive(cfg.seed, "shuffle", 0)),
        };
        trainer.ship_obs_norm();
        Ok(trainer)
    }

    /// Counters and statistics for a checkpoint.
    pub fn state(&self) -> TrainerState {
        TrainerState {
            env: self.cfg.env.id.clone(),
            version: self.version,
            env_steps: self.env_steps,
            episodes: self.episodes.finished(),
            beta: self.beta,
            adam_step: self.backend.optimizer_steps(),
            recent: self.episodes.recent().collect(),
            reward_rms: self.reward_norm.as_ref().map(|n| n.scaler.rms.clone()),
            spaces: Some((self.observation_space.to_string(), self.action_space.to_string())),
        }
    }

    /// The network being trained.
    pub fn net(&self) -> &ActorCriticNet {
        &self.net
    }

    /// Model parameters, flat in the network's layout.
    pub fn params(&self) -> Result<Vec<f32>> {
        self.backend.params()
    }

    /// Optimiser state.
    pub fn optimizer_state(&self) -> Result<AdamState> {
        self.backend.optimizer_state()
    }

    /// Observation normaliser, if enabled.
    pub fn obs_normalizer(&self) -> Option<&ObsNormalizer> {
        self.obs_norm.as_ref()
    }

    /// Continues a run from checkpointed parameters, optimiser state and statistics (replacing this fresh
    /// trainer's); fails with a message naming what does not match.
    pub fn restore(
        &mut self,
        state: TrainerState,
        params: &[f32],
        adam: AdamState,
        obs_norm: Option<ObsNormalizer>,
    ) -> std::result::Result<(), RestoreError> {
        state.check_env(&self.cfg)?;
        let t = self;
        let backend = |e: Error| RestoreError::Backend(Box::new(e));
        t.backend.load_params(params).map_err(backend)?;
        t.backend.load_optimizer_state(adam).map_err(backend)?;
        match (&mut t.obs_norm, obs_norm) {
            (Some(n), Some(saved)) if saved.rms.dim() == t.obs_dim => n.rms = saved.rms,
            (None, None) => {}
            _ => return Err(RestoreError::Normalization("observation")),
        }
        match (&mut t.reward_norm, state.reward_rms) {
            (Some(n), Some(rms)) => n.scaler.rms = rms,
            (None, None) => {}
            _ => return Err(RestoreError::Normalization("reward")),
        }
        t.version = state.version;
        t.env_steps = state.env_steps;
        t.beta = state.beta;
        t.episodes.restore(state.episodes, state.recent);
        t.shipped_obs_norm.clear();
        t.ship_obs_norm();
        Ok(())
    }

    /// Records the observation statistics that the current version ships with, keeping those of the versions a
    /// rollout may still come from (`max_policy_lag` back, at most [`SHIPPED_OBS_NORM_KEPT`]).
    fn ship_obs_norm(&mut self) {
        if let Some(n) = &self.obs_norm {
            let keep = (self.cfg.ppo.max_policy_lag as usize).saturating_add(1).min(SHIPPED_OBS_NORM_KEPT);
            while self.shipped_obs_norm.len() >= keep {
                self.shipped_obs_norm.pop_front();
            }
            self.shipped_obs_norm.push_back((self.version, n.clone()));
        }
    }

    /// The current policy version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Env steps trained on so far.
    pub fn env_steps(&self) -> u64 {
        self.env_steps
    }

    /// The run's configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }

    /// Safetensors bytes of the current policy (parameters plus observation statistics).
    pub fn weights(&self) -> Result<Vec<u8>> {
        Ok(encode_weights(&self.net, &self.params()?, self.obs_norm.as_ref())?)
    }

    /// The current policy as a snapshot for actors.
    pub fn snapshot(&self) -> Result<PolicySnapshot> {
        Ok(PolicySnapshot {
            version: self.version,
            weights: self.weights()?.into(),
            published_at: common::policy::unix_now(),
            incarnation: 0,
        })
    }

    /// Observation width and action space of the env being trained.
    pub fn spaces(&self) -> (usize, &Space) {
        (self.obs_dim, &self.action_space)
    }

    /// True if `rollout` is more than `max_policy_lag` versions behind the current policy.
    pub fn is_stale(&self, rollout: &Rollout) -> bool {
        rollout.policy_version.too_old(PolicyVersion(self.version), self.cfg.ppo.max_policy_lag)
    }

    /// One PPO update on `rollouts` (see the module comment); rollouts more than `max_policy_lag` versions old are
    /// dropped first.
    pub fn update(&mut self, mut rollouts: Vec<Rollout>) -> Result<UpdateReport> {
        let started = std::time::Instant::now();
        let before = rollouts.len();
        rollouts.retain(|r| !self.is_stale(r));
        rollouts.sort_by_key(|r| (r.actor_id, r.policy_version));
        self.episodes.record(rollouts.iter().flat_map(|r| &r.episodes))?;

        let (lr, coefs) = self.schedules.at(self.env_steps, self.beta);
        let mut report = UpdateReport {
            stale_rollouts: before - rollouts.len(),
            learning_rate: lr,
            clip_coef: coefs.clip_coef,
            kl_beta: self.beta,
            ..Default::default()
        };
        if let Some(batch) = self.assemble(&rollouts)? {
            report.epochs = self.backend.run_epochs(&batch, &coefs, &self.schedules.plan, lr, &mut self.rng)?;
            report.approx_kl = self.backend.batch_kl(&batch)?;
            if coefs.objective == Objective::KlPenalty {
                self.beta = adapt_beta(self.beta, report.approx_kl, self.cfg.ppo.kl_target);
            }
            self.take_in(&batch, &rollouts, &mut report);
        }
        report.policy_version = self.version;
        report.env_steps = self.env_steps;
        report.episodes = self.episodes.finished();
        let window = self.episodes.window_stats();
        report.mean_return = window.map(|w| w.mean_return);
        report.return_std = window.map(|w| w.return_std);
        report.mean_length = window.map(|w| w.mean_length);
        report.update_seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// After the epochs: the batch's diagnostics into `report`, its observations into the statistics (except the
    /// rollouts blamed for a non-finite step), and the step and version counters forward.
    fn take_in(&mut self, batch: &HostBatch, rollouts: &[Rollout], report: &mut UpdateReport) {
        report.samples = batch.len();
        report.explained_variance = explained_variance(&batch.values, &batch.returns);
        report.advantages = advantage_stats(&batch.advantages);
        let advantage_histogram = metrics::histogram!(common::metrics::ADVANTAGE);
        batch.advantages.iter().for_each(|&a| advantage_histogram.record(a as f64));
        if let Some(n) = &mut self.obs_norm {
            // The config allows observation normalisation for float observations only.
            let floats = rollouts.iter().filter(|r| !report.epochs.faulty_actors.contains(&r.actor_id));
            for obs in floats.filter_map(|r| r.obs.as_f32()) {
                n.rms.update(obs);
            }
        }
        self.env_steps += report.samples as u64;
        self.version += 1;
        self.ship_obs_norm();
    }

    /// Normalises, bootstraps and computes GAE for every rollout (None if there is nothing to train on). A
    /// recurrent model's batch is laid out as sequences ([`SeqLayout`]).
    fn assemble(&mut self, rollouts: &[Rollout]) -> Result<Option<HostBatch>> {
        let (d, p) = (self.obs_dim, &self.cfg.ppo);
        let mut host = HostBatch::default();
        let state_dim = self.net.state_dim();
        let recurrent = match state_dim {
            0 => None,
            _ => Some(self.backend.params()?),
        };
        let mut seq =
            SeqLayout { steps: rollouts.first().map_or(0, |r| r.num_steps), state_dim, ..SeqLayout::default() };
        for r in rollouts {
            let rewards = match &mut self.reward_norm {
                Some(n) => n.scale(r),
                None => r.rewards.clone(),
            };
            // Values of the final observations of truncated steps and of the observations after the last step.
            let mut boot = Vec::with_capacity(r.final_obs.len() + r.next_obs.len());
            self.input(r.policy_version, &r.final_obs, &mut boot);
            self.input(r.policy_version, &r.next_obs, &mut boot);
            let boot_values = match &recurrent {
                None => self.backend.values(&boot, boot.len() / d)?,
                Some(params) => {
                    let starts = episode_starts(r);
                    let first_row = host.len();
                    if r.num_steps != seq.steps || r.initial_state.len() != r.num_envs * state_dim {
                        return Err(Error::Internal(format!(
                            "a recurrent model's rollouts must all have {} steps and carry their initial states",
                            seq.steps
                        )));
                    }
                    seq.sequences.extend((0..r.num_envs).map(|j| (first_row + j, r.num_envs)));
                    seq.initial_states.extend_from_slice(&r.initial_state);
                    seq.starts.extend_from_slice(&starts);
                    self.recurrent_boot_values(params, r, &starts, &boot)
                }
            };
            let (final_boot, next_values) = boot_values.split_at(boot_values.len() - r.num_envs);
            let mut final_values = vec![0.0f32; r.len()];
            let truncated_at = r.truncated.iter().enumerate().filter(|(_, t)| **t).map(|(i, _)| i);
            for (i, v) in truncated_at.zip(final_boot) {
                final_values[i] = *v;
            }
            let input = GaeInput {
                rewards: &rewards,
                values: &r.values,
                terminated: &r.terminated,
                truncated: &r.truncated,
                final_values: &final_values,
                next_values,
            };
            let (adv, ret) = gae(&input, p.gamma, p.gae_lambda);
            let first_row = host.len();
            host.sources.push(RowSource { actor_id: r.actor_id, rows: first_row..first_row + r.len() });
            self.input(r.policy_version, &r.obs, &mut host.obs);
            host.actions.extend_from_slice(&r.actions);
            host.log_probs.extend_from_slice(&r.log_probs);
            host.values.extend_from_slice(&r.values);
            host.advantages.extend(adv);
            host.returns.extend(ret);
        }
        if recurrent.is_some() {
            host.seq = Some(seq);
        }
        Ok((!host.is_empty()).then_some(host))
    }

    /// A recurrent model's values of `boot` (the network inputs of `r`'s final observations of truncated steps,
    /// then of its observations after the last step), each from the state after the step it follows: the
    /// rollout is replayed from its initial state with the current parameters `params`.
    fn recurrent_boot_values(&self, params: &[f32], r: &Rollout, starts: &[bool], boot: &[f32]) -> Vec<f32> {
        let mut input = Vec::with_capacity(r.obs.len());
        self.input(r.policy_version, &r.obs, &mut input);
        let mut trace = NetTrace::default();
        let replay = Sequences { steps: r.num_steps, state0: &r.initial_state, starts };
        self.net.forward_seq(params, &input, replay, &mut trace);
        let (mut state0, mut boot_starts) = (Vec::new(), Vec::new());
        for (row, _) in r.truncated.iter().enumerate().filter(|(_, t)| **t) {
            trace.state_after(row, &mut state0);
            boot_starts.push(false);
        }
        let last = r.len() - r.num_envs;
        for row in last..r.len() {
            trace.state_after(row, &mut state0);
            // After an episode's last step the next observation starts a new one.
            boot_starts.push(r.terminated[row] || r.truncated[row]);
        }
        let mut boot_trace = NetTrace::default();
        let one_step = Sequences { steps: 1, state0: &state0, starts: &boot_starts };
        self.net.forward_seq(params, boot, one_step, &mut boot_trace);
        boot_trace.values().to_vec()
    }

    /// Appends `obs` of a rollout from policy `version` to `out` as network input, as its actor saw it
    /// ([`common::obs::prepare_input`]): float observations normalised with the statistics that version shipped
    /// with (a rollout one version behind was normalised with the statistics before the last update; with a sharp
    /// policy, such as log-std -2, even that small shift moved its log-probs far, approx KL ~3 in a HalfCheetah
    /// run), or the current statistics when that version's are no longer kept (after a resume); uint8 scaled.
    fn input(&self, version: PolicyVersion, obs: &ObsBuf, out: &mut Vec<f32>) {
        let shipped = self.shipped_obs_norm.iter().rev().find(|(v, _)| *v == version.0).map(|(_, n)| n);
        obs.input_into(self.net.spec().obs_scale, shipped.or(self.obs_norm.as_ref()), out);
    }
}

/// `[T·N]` which rows of `r` start an episode inside it: those after a terminated or truncated step of their env
/// (a row at `t = 0` continues from the rollout's initial state, which the actor already reset).
pub fn episode_starts(r: &Rollout) -> Vec<bool> {
    let n = r.num_envs;
    (0..r.len()).map(|i| i >= n && (r.terminated[i - n] || r.truncated[i - n])).collect()
}

/// `1 − Var(y − ŷ) / Var(y)`; NaN when the returns have no variance.
pub fn explained_variance(pred: &[f32], target: &[f32]) -> f64 {
    let var = |xs: &mut dyn Iterator<Item = f64>| {
        let v: Vec<f64> = xs.collect();
        let m = v.iter().sum::<f64>() / v.len().max(1) as f64;
        v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len().max(1) as f64
    };
    let var_y = var(&mut target.iter().map(|&y| y as f64));
    if var_y == 0.0 {
        return f64::NAN;
    }
    1.0 - var(&mut pred.iter().zip(target).map(|(&p, &y)| (y - p) as f64)) / var_y
}

/// Mean, std, quantiles (nearest rank) and histogram of `adv`.
pub fn advantage_stats(adv: &[f32]) -> AdvantageStats {
    if adv.is_empty() {
        return AdvantageStats::default();
    }
    let n = adv.len() as f64;
    let mean = adv.iter().map(|&a| a as f64).sum::<f64>() / n;
    let std = (adv.iter().map(|&a| (a as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
    let mut sorted = adv.to_vec();
    sorted.sort_by(f32::total_cmp);
    let q = |p: f64| sorted[((p * (n - 1.0)).round() as usize).min(sorted.len() - 1)] as f64;
    let histogram = Histogram::of(adv);
    AdvantageStats { mean, std, quantiles: [q(0.05), q(0.25), q(0.5), q(0.75), q(0.95)], histogram }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A Pendulum-v1 rollout (obs width 3, one env, 4 steps) of policy `version` with observations around `scale`.
    fn pendulum_rollout(version: u64, scale: f32) -> Rollout {
        let obs: Vec<f32> = (0..12).map(|i| scale * (1.0 + i as f32 / 12.0)).collect();
        Rollout {
            policy_version: PolicyVersion(version),
            num_steps: 4,
            num_envs: 1,
            obs: obs.into(),
            actions: vec![0.0; 4],
            log_probs: vec![-1.0; 4],
            values: vec![0.0; 4],
            rewards: vec![-1.0; 4],
            terminated: vec![false; 4],
            truncated: vec![false; 4],
            next_obs: vec![scale; 3].into(),
            ..Default::default()
        }
    }

    /// A recurrent model's batch is its env sequences (an episode start after env 0's truncation at t = 1), and the
    /// truncated step bootstraps from the value of its final observation taken as the next step of the same
    /// sequence: env 0's rows up to the truncation, then the final observation, replayed from its initial state. On
    /// a shared trunk (one GRU of 4 units) and on separate ones (a GRU of 2 units each): 4 state values either way.
    #[test]
    fn recurrent_rollouts_are_sequences_bootstrapped_from_their_own_state() {
        for (shared, size) in [(true, 4), (false, 2)] {
            recurrent_rollout_is_bootstrapped_from_its_own_state(shared, size);
        }
    }

    fn recurrent_rollout_is_bootstrapped_from_its_own_state(shared: bool, core_size: usize) {
        let overrides = [
            "env=\"Pendulum-v1\"".to_string(),
            format!("model.shared_trunk={shared}"),
            "model.core=\"gru\"".to_string(),
            format!("model.core_size={core_size}"),
            "model.hidden_sizes=[8]".to_string(),
            "ppo.gamma=0.9".to_string(),
        ];
        let cfg = TrainConfig::load(None, &overrides).unwrap();
        let mut t = Trainer::new(&cfg).unwrap();
        let (steps, envs) = (4, 2);
        let obs: Vec<f32> = (0..steps * envs * 3).map(|i| ((i * 7 % 13) as f32 - 6.0) / 6.0).collect();
        let final_obs = vec![0.3f32, -0.8, 0.5];
        let r = Rollout {
            num_steps: steps,
            num_envs: envs,
            obs: obs.clone().into(),
            actions: vec![0.0; steps * envs],
            log_probs: vec![-1.0; steps * envs],
            values: vec![0.5; steps * envs],
            rewards: vec![-1.0; steps * envs],
            terminated: vec![false; steps * envs],
            truncated: (0..steps * envs).map(|i| i == 2).collect(),
            final_obs: final_obs.clone().into(),
            next_obs: vec![0.1; envs * 3].into(),
            initial_state: vec![0.4, -0.2, 0.1, 0.3, -0.5, 0.2, 0.0, 0.6],
            ..Default::default()
        };
        let batch = t.assemble(std::slice::from_ref(&r)).unwrap().unwrap();
        let seq = batch.seq.as_ref().unwrap();
        assert_eq!((seq.steps, seq.state_dim, seq.sequences.as_slice()), (4, 4, &[(0, 2), (1, 2)][..]));
        assert_eq!(seq.starts, [false, false, false, false, true, false, false, false], "row 4 follows the truncation");
        // Env 0's own sequence: rows 0 and 2 (t = 0, 1), then the final observation.
        let own: Vec<f32> = [&obs[0..3], &obs[6..9], &final_obs[..]].concat();
        let mut trace = common::net::NetTrace::default();
        let replay = Sequences { steps: 3, state0: &r.initial_state[..4], starts: &[false; 3] };
        t.net().forward_seq(&t.params().unwrap(), &own, replay, &mut trace);
        let final_value = trace.values()[2];
        // A truncated step's advantage is its own TD error: r + γ·V(final) − V.
        let want = -1.0 + 0.9 * final_value - 0.5;
        assert!((batch.advantages[2] - want).abs() < 1e-6, "shared {shared}: {} vs {want}", batch.advantages[2]);
    }

    #[test]
    fn late_rollouts_are_normalised_with_the_statistics_their_policy_shipped_with() {
        let cfg = TrainConfig::load(
            None,
            &["env=\"Pendulum-v1\"".into(), "normalize.observations=true".into(), "ppo.max_policy_lag=2".into()],
        )
        .unwrap();
        let mut t = Trainer::new(&cfg).unwrap();
        let v0 = t.obs_normalizer().unwrap().clone();
        t.update(vec![pendulum_rollout(0, 100.0)]).unwrap();
        let v1 = t.obs_normalizer().unwrap().clone();
        assert_ne!(v0, v1, "the update moves the statistics");
        // One version behind (as the second of two actors usually is): version 0's statistics, as its actor used.
        let late = pendulum_rollout(0, 1.0);
        let mut want = late.obs.as_f32().unwrap().to_vec();
        v0.normalize(&mut want);
        assert_eq!(t.assemble(&[late]).unwrap().unwrap().obs, want);
        // Current: the current statistics.
        let current = pendulum_rollout(1, 1.0);
        let mut want = current.obs.as_f32().unwrap().to_vec();
        v1.normalize(&mut want);
        assert_eq!(t.assemble(&[current]).unwrap().unwrap().obs, want);
        // After a resume only the restored statistics are known: every rollout gets those.
        let state = t.state();
        let (params, adam) = (t.params().unwrap(), t.optimizer_state().unwrap());
        let mut resumed = Trainer::new(&cfg).unwrap();
        resumed.restore(state, &params, adam, Some(v1.clone())).unwrap();
        let late = pendulum_rollout(0, 1.0);
        let mut want = late.obs.as_f32().unwrap().to_vec();
        v1.normalize(&mut want);
        assert_eq!(resumed.assemble(&[late]).unwrap().unwrap().obs, want);
    }

    /// uint8 observations reach the network as x/255 (the bootstrap values too), and are never normalised.
    #[test]
    fn images_are_scaled_not_normalised() {
        let image = |extra: &[&str]| {
            let mut o = vec![
                "env.id=\"Img-v0\"".to_string(),
                "env.observation_space=\"Box(0, 255, (2, 2), uint8)\"".into(),
                "env.action_space=\"Discrete(2)\"".into(),
            ];
            o.extend(extra.iter().map(|s| s.to_string()));
            TrainConfig::load(None, &o).unwrap()
        };
        let e = Trainer::new(&image(&["normalize.observations=true"])).err().unwrap().to_string();
        assert!(e.contains("normalize.observations") && e.contains("scaled by 1/255"), "{e}");
        let mut t = Trainer::new(&image(&[])).unwrap();
        let r = Rollout {
            num_steps: 1,
            num_envs: 1,
            obs: vec![0u8, 51, 255, 3].into(),
            actions: vec![1.0],
            log_probs: vec![-0.7],
            values: vec![0.0],
            rewards: vec![1.0],
            terminated: vec![false],
            truncated: vec![false],
            final_obs: ObsBuf::U8(vec![]),
            next_obs: vec![255u8; 4].into(),
            ..Default::default()
        };
        let batch = t.assemble(&[r]).unwrap().unwrap();
        let scale = common::obs::UINT8_SCALE;
        assert_eq!(batch.obs, vec![0.0, 51.0 * scale, 1.0, 3.0 * scale]);
    }

    #[test]
    fn explained_variance_closed_forms() {
        assert!((explained_variance(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]) - 1.0).abs() < 1e-12);
        assert!(explained_variance(&[2.0, 2.0, 2.0], &[1.0, 2.0, 3.0]).abs() < 1e-12);
        assert!(explained_variance(&[0.0, 0.0], &[1.0, 1.0]).is_nan());
    }

    #[test]
    fn advantage_quantiles() {
        let adv: Vec<f32> = (0..101).map(|i| i as f32).collect();
        let s = advantage_stats(&adv);
        assert_eq!(s.quantiles, [5.0, 25.0, 50.0, 75.0, 95.0]);
        assert!((s.mean - 50.0).abs() < 1e-9);
        assert_eq!(s.histogram.num, 101);
    }

    #[test]
    fn histogram_buckets_cover_min_to_max() {
        // 0..=30: width 1, so 0 and 1 share bucket 0 ([0, 1]) and every later bucket i holds i + 1.
        let values: Vec<f32> = (0..=30).map(|i| i as f32).chain([f32::NAN, f32::INFINITY]).collect();
        let h = Histogram::of(&values);
        assert_eq!((h.min, h.max, h.num), (0.0, 30.0, 31));
        assert_eq!(h.sum, 465.0);
        assert_eq!(h.sum_squares, (0..=30).map(|i| (i * i) as f64).sum::<f64>());
        let mut want = [1u64; HISTOGRAM_BUCKETS];
        want[0] = 2;
        assert_eq!(h.counts, want);
        let limits = h.bucket_limits();
        assert_eq!((limits[0], limits[HISTOGRAM_BUCKETS - 1]), (1.0, 30.0));
        assert!(limits.windows(2).all(|w| w[0] < w[1]));
        // One distinct value: everything in the first bucket; nothing finite: an empty histogram.
        let same = Histogram::of(&[2.5; 7]);
        assert_eq!((same.min, same.max, same.num, same.counts[0]), (2.5, 2.5, 7, 7));
        assert_eq!(Histogram::of(&[f32::NAN]), Histogram::default());
        let spread = Histogram::of(&[-1.0, 0.3, 0.31, 2.0]);
        assert_eq!(spread.counts.iter().sum::<u64>(), 4);
        assert_eq!((spread.counts[0], spread.counts[HISTOGRAM_BUCKETS - 1]), (1, 1));
    }
}
