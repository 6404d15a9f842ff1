//! The sampler: runs the vectorised env and batched policy inference, producing one [`Rollout`] at a time.

use crate::Error;
use common::env::{Dtype, EnvFactory, Space, VecEnv};
use common::ids::{ActorId, PolicyVersion};
use common::model::ModelSpec;
use common::obs::ObsBuf;
use common::policy::{ActOutput, Policy};
use common::policy_cell::PolicyCell;
use common::rollout::{DEFAULT_NUM_ENVS, DEFAULT_ROLLOUT_STEPS, Rollout};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Whether a sampler waits for a newer policy version after each rollout before collecting the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyWait {
    /// Never wait: collect continuously with the newest weights at hand (maximum throughput, more lag).
    Never,
    /// Always wait: every rollout comes from a new version (on-policy; reproducible with one actor).
    Forever,
    /// Wait at most this long, then collect with what is there (near on-policy, and live if the learner waits
    /// for more data than the actors send per version).
    UpTo(Duration),
}

/// Shape of the experience one actor produces.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerConfig {
    /// Environments stepped together (one batched forward pass per step).
    pub num_envs: usize,
    /// Steps per env in one rollout.
    pub rollout_steps: usize,
    /// Waiting for a new policy between rollouts.
    pub policy_wait: PolicyWait,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self { num_envs: DEFAULT_NUM_ENVS, rollout_steps: DEFAULT_ROLLOUT_STEPS, policy_wait: PolicyWait::Forever }
    }
}

/// Steps envs with a policy and records rollouts.
pub struct Sampler {
    env: VecEnv,
    rng: ChaCha8Rng,
    cfg: SamplerConfig,
    out: ActOutput,
    env_actions: Vec<f32>,
    /// The observation space's dtype, which the rollouts keep (read once: a space carries its bounds).
    obs_dtype: Dtype,
    /// `[N, state_dim]` each env's recurrent state (empty for a memoryless policy), kept across rollouts and
    /// policy versions, zeroed when its episode ends.
    state: Vec<f32>,
    /// The layout `state` belongs to: a policy with another core (or trunks) starts every env from zeros.
    state_layout: common::model::StateLayout,
}

impl Sampler {
    /// `cfg.num_envs` copies of the built-in env `env_id`, env seeds from `seed`, action sampling from a derived
    /// stream.
    pub fn new(env_id: &str, cfg: &SamplerConfig, seed: u64) -> Result<Self, Error> {
        Self::from_factory(&common::env::builtin_factory(env_id), cfg, seed)
    }

    /// `cfg.num_envs` envs built by `factory` (a user's env), seeded as [`Sampler::new`] does.
    pub fn from_factory(factory: &EnvFactory, cfg: &SamplerConfig, seed: u64) -> Result<Self, Error> {
        let env = VecEnv::from_factory(factory, cfg.num_envs, common::seed::derive(seed, "env", 0))?;
        Ok(Self {
            obs_dtype: env.observation_space().dtype(),
            env,
            rng: ChaCha8Rng::seed_from_u64(common::seed::derive(seed, "action", 0)),
            cfg: cfg.clone(),
            out: ActOutput::default(),
            env_actions: Vec::new(),
            state: Vec::new(),
            state_layout: common::model::StateLayout::of(common::model::Core::None, false),
        })
    }

    /// Observation width.
    pub fn obs_dim(&self) -> usize {
        self.env.obs_dim()
    }

    /// Observation space.
    pub fn observation_space(&self) -> Space {
        self.env.observation_space()
    }

    /// Action space.
    pub fn action_space(&self) -> Space {
        self.env.action_space()
    }

    /// Runs `rollout_steps` steps of every env with `policy`; observations are kept in the observation space's
    /// dtype (an env that writes a value its uint8 space cannot hold is an error naming it).
    pub fn collect(&mut self, policy: &mut Policy) -> Result<Rollout, Error> {
        let (t_max, n, d) = (self.cfg.rollout_steps, self.env.num_envs(), self.env.obs_dim());
        let space = self.env.action_space();
        let a = space.flat_dim();
        let dtype = self.obs_dtype;
        // Zero states at the first rollout and after a model with another state layout (a learner restarted with
        // another config): states of one core mean nothing to another.
        let layout = policy.spec().state_layout();
        if self.state_layout != layout || self.state.len() != n * layout.dim() {
            self.state_layout = layout;
            self.state = vec![0.0; n * policy.state_dim()];
        }
        let mut r = Rollout {
            policy_version: PolicyVersion(policy.version()),
            num_steps: t_max,
            num_envs: n,
            obs: ObsBuf::new(dtype),
            final_obs: ObsBuf::new(dtype),
            next_obs: ObsBuf::new(dtype),
            actions: Vec::with_capacity(t_max * n * a),
            log_probs: Vec::with_capacity(t_max * n),
            values: Vec::with_capacity(t_max * n),
            rewards: Vec::with_capacity(t_max * n),
            terminated: Vec::with_capacity(t_max * n),
            truncated: Vec::with_capacity(t_max * n),
            initial_state: self.state.clone(),
            ..Default::default()
        };
        for _ in 0..t_max {
            r.obs.extend_raw(self.env.obs())?;
            let started = std::time::Instant::now();
            policy.act(self.env.obs(), &mut self.state, &mut self.rng, false, &mut self.out)?;
            metrics::histogram!(common::metrics::ACTOR_INFERENCE_LATENCY).record(started.elapsed().as_secs_f64());
            r.actions.extend_from_slice(&self.out.actions);
            r.log_probs.extend_from_slice(&self.out.log_probs);
            r.values.extend_from_slice(&self.out.values);
            space.clip_into(&self.out.actions, &mut self.env_actions);
            let step = self.env.step(&self.env_actions);
            r.rewards.extend_from_slice(&step.rewards);
            r.terminated.extend_from_slice(&step.terminated);
            r.truncated.extend_from_slice(&step.truncated);
            // An env whose episode ended starts the next one from a zero state.
            let width = policy.state_dim();
            for (e, _) in step.terminated.iter().zip(&step.truncated).enumerate().filter(|(_, (a, b))| **a || **b) {
                self.state[e * width..(e + 1) * width].fill(0.0);
            }
            for (e, _) in step.truncated.iter().enumerate().filter(|(_, t)| **t) {
                r.final_obs.extend_raw(&step.final_obs[e * d..(e + 1) * d])?;
            }
            r.episodes.extend_from_slice(&step.episodes);
        }
        r.next_obs.extend_raw(self.env.obs())?;
        Ok(r)
    }
}

/// The receiver of a [`RolloutSink`] has gone away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkClosed;

/// Where finished rollouts go. `send` blocks while the receiver is full (backpressure) and fails once it is gone.
pub trait RolloutSink {
    /// Hands over one rollout.
    fn send(&self, rollout: Rollout) -> Result<(), SinkClosed>;
}

impl RolloutSink for crossbeam_channel::Sender<Rollout> {
    fn send(&self, rollout: Rollout) -> Result<(), SinkClosed> {
        crossbeam_channel::Sender::send(self, rollout).map_err(|_| SinkClosed)
    }
}

impl RolloutSink for tokio::sync::mpsc::Sender<Rollout> {
    fn send(&self, rollout: Rollout) -> Result<(), SinkClosed> {
        self.blocking_send(rollout).map_err(|_| SinkClosed)
    }
}

/// A sink that stamps every rollout with its actor's id before handing it on (local mode, where the id is fixed;
/// the networked actor stamps the id the learner handed out when it submits).
pub struct Stamped<S> {
    /// Where the rollouts go.
    pub sink: S,
    /// The id they carry.
    pub actor_id: ActorId,
}

impl<S: RolloutSink> RolloutSink for Stamped<S> {
    fn send(&self, mut rollout: Rollout) -> Result<(), SinkClosed> {
        rollout.actor_id = self.actor_id;
        self.sink.send(rollout)
    }
}

/// The sampler loop: load the newest policy, collect, send; until `stop` is set or the sink closes. A rollout in
/// progress when `stop` is set is finished and sent. Returns how many rollouts the sink took.
///
/// In `sync` mode each rollout waits for a policy newer than the one that produced the previous rollout.
pub fn run_sampler(
    mut sampler: Sampler,
    env_spec: &ModelSpec,
    policies: &PolicyCell,
    sink: &impl RolloutSink,
    stop: &CancellationToken,
) -> Result<u64, Error> {
    let mut snapshot = policies.latest();
    let mut policy = Policy::from_snapshot(env_spec, &snapshot)?;
    // (incarnation, version) of the policy behind the previous rollout.
    let mut used: Option<(u64, u64)> = None;
    let mut waited = Duration::ZERO;
    let mut sent = 0;
    const POLL: Duration = Duration::from_millis(50);
    while !stop.is_cancelled() {
        let newest = match (used, sampler.cfg.policy_wait) {
            (Some((i, v)), PolicyWait::Forever) => match policies.wait_newer(i, v, POLL) {
                Some(s) => s,
                None => continue,
            },
            (Some((i, v)), PolicyWait::UpTo(limit)) if waited < limit => {
                let slice = POLL.min(limit - waited);
                match policies.wait_newer(i, v, slice) {
                    Some(s) => s,
                    None => {
                        waited += slice;
                        continue;
                    }
                }
            }
            _ => policies.latest(),
        };
        waited = Duration::ZERO;
        if (newest.incarnation, newest.version) != (snapshot.incarnation, snapshot.version) {
            snapshot = newest;
            policy = Policy::from_snapshot(env_spec, &snapshot)?;
        }
        let mut rollout = sampler.collect(&mut policy)?;
        rollout.incarnation = snapshot.incarnation;
        used = Some((snapshot.incarnation, rollout.policy_version.0));
        if sink.send(rollout).is_err() {
            break;
        }
        sent += 1;
    }
    Ok(sent)
}
