//! The training configuration: one TOML file (`configs/*.toml`), overridable key by key from the command line.

use common::env::Space;
use common::model::{Head, ModelConfig};
use common::rollout::{DEFAULT_NUM_ENVS, DEFAULT_ROLLOUT_STEPS};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Which policy objective the PPO update optimises (Schulman et al. 2017).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// Clipped surrogate `min(r A, clip(r, 1 − ε, 1 + ε) A)`.
    Clip,
    /// `r A − β KL(old ‖ new)` with β adapted towards `kl_target` after every update.
    KlPenalty,
}

/// PPO hyperparameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PpoConfig {
    /// Policy objective: `clip` or `kl_penalty`.
    pub objective: Objective,
    /// Adam learning rate (initial value when annealed).
    pub learning_rate: f64,
    /// Anneal the learning rate linearly to 0 over `total_steps`.
    pub anneal_lr: bool,
    /// Discount factor.
    pub gamma: f64,
    /// GAE lambda.
    pub gae_lambda: f64,
    /// Passes over each batch.
    pub num_epochs: usize,
    /// Samples per gradient step.
    pub minibatch_size: usize,
    /// Clip range ε of the clipped objective (and of value clipping).
    pub clip_coef: f64,
    /// Anneal the clip range linearly to 0 over `total_steps` (as the RL Zoo's `lin_0.2`).
    pub anneal_clip: bool,
    /// Clip the value update around the behaviour values.
    pub clip_vloss: bool,
    /// Value loss coefficient.
    pub vf_coef: f64,
    /// Entropy bonus coefficient.
    pub ent_coef: f64,
    /// Global gradient-norm limit.
    pub max_grad_norm: f64,
    /// Stop the epochs early once an epoch's mean approximate KL exceeds this (none: never).
    pub target_kl: Option<f64>,
    /// Normalise advantages per minibatch.
    pub norm_adv: bool,
    /// KL target d_targ of the adaptive penalty (`kl_penalty` only).
    pub kl_target: f64,
    /// Initial penalty coefficient β (`kl_penalty` only).
    pub kl_beta: f64,
    /// Samples per update (0: one rollout from every local actor, `count * num_envs * rollout_steps`).
    pub batch_size: usize,
    /// Rollouts whose policy is more than this many versions behind are dropped.
    pub max_policy_lag: u64,
}

impl Default for PpoConfig {
    fn default() -> Self {
        Self {
            objective: Objective::Clip,
            learning_rate: 2.5e-4,
            anneal_lr: true,
            gamma: 0.99,
            gae_lambda: 0.95,
            num_epochs: 4,
            minibatch_size: 256,
            clip_coef: 0.2,
            anneal_clip: false,
            clip_vloss: false,
            vf_coef: 0.5,
            ent_coef: 0.0,
            max_grad_norm: 0.5,
            target_kl: None,
            norm_adv: true,
            kl_target: 0.01,
            kl_beta: 1.0,
            batch_size: 0,
            max_policy_lag: 1,
        }
    }
}

/// Running normalisation of observations and rewards (for continuous control).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NormalizeConfig {
    /// Normalise observations by running mean/std (statistics ship with every policy snapshot).
    pub observations: bool,
    /// Scale rewards by the running std of the discounted return.
    pub rewards: bool,
    /// Clip normalised observations to ±this.
    pub obs_clip: f32,
}

impl Default for NormalizeConfig {
    fn default() -> Self {
        Self { observations: false, rewards: false, obs_clip: 10.0 }
    }
}

/// Local actors started inside `learner train`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActorsConfig {
    /// Number of actor samplers (threads).
    pub count: usize,
    /// Environments per actor, stepped together with one batched forward pass.
    pub num_envs: usize,
    /// Steps per env in one rollout.
    pub rollout_steps: usize,
    /// Each actor waits for the next policy version after a rollout (on-policy, reproducible, no lag).
    pub sync: bool,
}

impl Default for ActorsConfig {
    fn default() -> Self {
        Self { count: 1, num_envs: DEFAULT_NUM_ENVS, rollout_steps: DEFAULT_ROLLOUT_STEPS, sync: true }
    }
}

/// The gRPC server of `learner serve` (and `learner train --transport grpc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: String,
    /// Largest gRPC message accepted or sent, in bytes; larger rollouts get RESOURCE_EXHAUSTED. The default
    /// (16 MiB) holds a CartPole rollout of 8 envs x 60k steps, and weights of a ~4M-parameter model.
    pub max_message_bytes: usize,
    /// Rollouts buffered between the service and the trainer; a full queue slows senders down.
    pub queue_capacity: usize,
    /// Write a checkpoint every this many updates (0: only at shutdown).
    pub checkpoint_every: u64,
    /// Checkpoints kept.
    pub keep_checkpoints: usize,
    /// Seconds the current update may take to finish at shutdown before the learner exits without it.
    pub shutdown_grace_seconds: f64,
    /// Largest `|reward|` accepted in a rollout (INVALID_ARGUMENT `out_of_range` beyond); an episode's
    /// `|return|` may be at most this times its length.
    pub max_abs_reward: f64,
    /// Largest `|x|` accepted in `obs`, `final_obs` and `next_obs`.
    pub max_abs_observation: f64,
    /// Largest `|value|` accepted in a rollout's behaviour value estimates.
    pub max_abs_value: f64,
    /// Largest `|a|` accepted in a Box action (actions travel unclipped).
    pub max_abs_action: f64,
    /// Bound on behaviour log-probabilities per action dimension: Discrete log-probs must lie in `[-b, 0]`
    /// (e^-30 ~ 1e-13: no sampler draws such an action), Box(d) log-probs in `[-b·d, b·d]`.
    pub max_abs_log_prob_per_dim: f64,
    /// Longest `actor_name` accepted by Register, in bytes.
    pub max_actor_name_bytes: usize,
    /// Most actors the registry holds at once; Register answers RESOURCE_EXHAUSTED beyond.
    pub max_actors: usize,
    /// An actor with neither an open policy stream nor a submission for this many seconds leaves the registry
    /// (it registers again when it comes back).
    pub actor_idle_seconds: f64,
    /// When the registry is full, a registration that never opened a policy stream nor had a rollout accepted
    /// makes room for a newcomer once it is this many seconds old (oldest first); younger ones are safe.
    pub registration_grace_seconds: f64,
    /// Most registrations that never opened a policy stream nor had a rollout accepted one peer (IP address, or
    /// actor name where the transport has none) holds; its next registration replaces its oldest such one.
    pub max_idle_registrations_per_peer: usize,
}

impl ServerConfig {
    /// The magnitude bounds rollouts are validated against.
    pub fn bounds(&self) -> common::rollout::Bounds {
        common::rollout::Bounds {
            max_abs_reward: self.max_abs_reward,
            max_abs_observation: self.max_abs_observation,
            max_abs_value: self.max_abs_value,
            max_abs_action: self.max_abs_action,
            max_abs_log_prob_per_dim: self.max_abs_log_prob_per_dim,
        }
    }

    /// The bounds of the actor registry.
    pub fn registry_limits(&self) -> RegistryLimits {
        RegistryLimits {
            max_name_bytes: self.max_actor_name_bytes,
            max_actors: self.max_actors,
            idle: Duration::from_secs_f64(self.actor_idle_seconds),
            grace: Duration::from_secs_f64(self.registration_grace_seconds),
            max_idle_per_peer: self.max_idle_registrations_per_peer,
        }
    }
}

/// Bounds of the actor registry, read from `[server]` (see [`ServerConfig::registry_limits`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegistryLimits {
    /// Longest `actor_name`, in bytes (`max_actor_name_bytes`).
    pub max_name_bytes: usize,
    /// Most actors held at once (`max_actors`).
    pub max_actors: usize,
    /// An actor without an open policy stream and without a submission for this long is forgotten
    /// (`actor_idle_seconds`).
    pub idle: Duration,
    /// Age from which a never-active registration may be evicted for a newcomer when the registry is full
    /// (`registration_grace_seconds`).
    pub grace: Duration,
    /// Most never-active registrations one peer holds (`max_idle_registrations_per_peer`).
    pub max_idle_per_peer: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:50051".into(),
            max_message_bytes: 16 << 20,
            queue_capacity: 16,
            checkpoint_every: 20,
            keep_checkpoints: 3,
            shutdown_grace_seconds: 30.0,
            max_abs_reward: 1e6,
            max_abs_observation: 1e6,
            max_abs_value: 1e9,
            max_abs_action: 1e6,
            max_abs_log_prob_per_dim: 30.0,
            max_actor_name_bytes: 256,
            max_actors: 1024,
            actor_idle_seconds: 60.0,
            registration_grace_seconds: 5.0,
            max_idle_registrations_per_peer: 32,
        }
    }
}

/// Which implementation of the PPO update the learner runs (see `TrainConfig::backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// `fused` on CPU, `candle` elsewhere.
    Auto,
    /// Hand-derived forward and backward on flat host buffers (CPU).
    Fused,
    /// Candle tensors and autograd (CPU or CUDA).
    Candle,
}

/// Everything `learner train` needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// The environment: a built-in id (`env = "CartPole-v1"`), or any id with its spaces (`[env]` with `id`,
    /// `observation_space`, `action_space`), trained through actors that run it (the Python actor).
    pub env: EnvConfig,
    /// Root seed; every env, sampler and shuffle seed derives from it.
    pub seed: u64,
    /// Stop after this many env steps.
    pub total_steps: u64,
    /// Stop as soon as the mean return over the last `return_window` episodes reaches this.
    pub target_return: Option<f64>,
    /// Finished episodes in the moving mean behind `target_return` and the reported mean return.
    pub return_window: usize,
    /// Without a terminal, seconds between two progress lines in the log (the first and last update are always
    /// logged); on a terminal a progress bar shows every update.
    pub log_interval_seconds: f64,
    /// Append one line per finished episode to this file: `<unix time> <return> <length>` (for benchmarks and
    /// external monitors; lines are flushed after every update).
    pub episode_log: Option<PathBuf>,
    /// Write TensorBoard event files into the run directory (`events.out.tfevents.*`: the `progress.csv` columns
    /// as scalars against env steps, and the histogram `advantages`), so `tensorboard --logdir runs` shows the run
    /// live; on by default.
    pub tensorboard: bool,
    /// `cpu`, `cuda` or `cuda:N` (CUDA needs the `cuda` feature).
    pub device: String,
    /// How the learner computes the update: `auto` (`fused` on CPU, `candle` on CUDA), `fused` (hand-derived
    /// forward and backward on host buffers, CPU only) or `candle` (candle autograd, any device).
    pub backend: BackendKind,
    /// Threads of the `fused` backend: 2 trains the actor and the critic net side by side, 1 one after the other.
    pub threads: usize,
    /// Parent directory of run directories.
    pub runs_dir: PathBuf,
    /// Name of the run directory under `runs_dir`. Without one, `learner train` uses `<env>-seed<seed>-<unix time>`
    /// (`<env>-seed<seed>-grpc-<unix time>` with `--transport grpc`) and `learner serve` `<env>-seed<seed>`, the
    /// same on every start, so that `--resume` finds the run.
    pub run_name: Option<String>,
    /// Local actors.
    pub actors: ActorsConfig,
    /// PPO hyperparameters.
    pub ppo: PpoConfig,
    /// Network shape.
    pub model: ModelConfig,
    /// Observation and reward normalisation.
    pub normalize: NormalizeConfig,
    /// gRPC server settings.
    pub server: ServerConfig,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            env: EnvConfig::builtin("CartPole-v1"),
            seed: 1,
            total_steps: 100_000,
            target_return: None,
            return_window: 100,
            log_interval_seconds: 5.0,
            episode_log: None,
            tensorboard: true,
            device: "cpu".into(),
            backend: BackendKind::Auto,
            threads: 2,
            runs_dir: PathBuf::from("runs"),
            run_name: None,
            actors: ActorsConfig::default(),
            ppo: PpoConfig::default(),
            model: ModelConfig::default(),
            normalize: NormalizeConfig::default(),
            server: ServerConfig::default(),
        }
    }
}

/// The environment a run trains on: its id and, for an env that is not built in, its spaces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "EnvRepr", into = "EnvRepr")]
pub struct EnvConfig {
    /// Gymnasium id; actors must register with it.
    pub id: String,
    /// Observation space in gymnasium's notation (`Box(-inf, inf, (17,))`); with `action_space`, required for an
    /// env that is not built in, and checked against a built-in env's.
    pub observation_space: Option<String>,
    /// Action space in gymnasium's notation (`Discrete(2)`, `Box(-1, 1, (6,))`).
    pub action_space: Option<String>,
    /// For an env that is not built in and has no spaces in the config: take them from the first actor that
    /// registers (off by default; logged, and written to the run directory's `config.toml` and the checkpoints,
    /// which a resumed run and every later actor must match).
    pub spaces_from_first_actor: bool,
}

/// How `env` is written in TOML: an id string, or a table with the spaces.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum EnvRepr {
    Id(String),
    Table(EnvTable),
}

/// The `[env]` table.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvTable {
    id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    observation_space: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    action_space: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    spaces_from_first_actor: bool,
}

impl From<EnvRepr> for EnvConfig {
    fn from(r: EnvRepr) -> Self {
        match r {
            EnvRepr::Id(id) => Self::builtin(id),
            EnvRepr::Table(EnvTable { id, observation_space, action_space, spaces_from_first_actor }) => {
                Self { id, observation_space, action_space, spaces_from_first_actor }
            }
        }
    }
}

impl From<EnvConfig> for EnvRepr {
    fn from(e: EnvConfig) -> Self {
        match (e.observation_space, e.action_space, e.spaces_from_first_actor) {
            (None, None, false) => EnvRepr::Id(e.id),
            (observation_space, action_space, spaces_from_first_actor) => {
                EnvRepr::Table(EnvTable { id: e.id, observation_space, action_space, spaces_from_first_actor })
            }
        }
    }
}

impl From<&str> for EnvConfig {
    fn from(id: &str) -> Self {
        Self::builtin(id)
    }
}

impl std::fmt::Display for EnvConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.id)
    }
}

/// The most dimensions (or discrete actions) a space may have: a bound on the network a config or an actor can
/// make the learner allocate.
pub const MAX_SPACE_DIM: usize = 65_536;

/// Why an env's spaces are not known.
#[derive(Debug, thiserror::Error)]
pub enum EnvSpecError {
    /// Neither built in nor described.
    #[error(
        "{id:?} is not a built-in env ({known}); describe it with [env] id, observation_space and action_space \
         (e.g. observation_space = \"Box(-inf, inf, (17,))\", action_space = \"Box(-1, 1, (6,))\") and run its \
         actors with proxima-actor"
    )]
    Unknown {
        /// The id.
        id: String,
        /// The built-in ids.
        known: String,
    },
    /// Only one of the two spaces given.
    #[error("give both observation_space and action_space, or neither for a built-in env")]
    OneSpace,
    /// A space that does not parse.
    #[error(transparent)]
    Notation(#[from] common::env::NotationError),
    /// More dimensions than [`MAX_SPACE_DIM`].
    #[error("the {which} space has {dim} dimensions; the learner takes at most {MAX_SPACE_DIM}")]
    TooLarge {
        /// `observation` or `action`.
        which: &'static str,
        /// Its flat dimension (or number of actions).
        dim: usize,
    },
    /// Observations must be a Box.
    #[error("observation_space must be a Box, not {0}")]
    ObservationsNotBox(String),
    /// An action space no head produces.
    #[error("action_space: {0}")]
    Actions(#[from] common::env::SpaceError),
    /// Spaces given for a built-in env that differ from its own.
    #[error("the {which} space of {id} is {builtin}, the config says {given}")]
    Differs {
        /// The id.
        id: String,
        /// `observation` or `action`.
        which: &'static str,
        /// The built-in space.
        builtin: String,
        /// The configured space.
        given: String,
    },
}

impl EnvConfig {
    /// A built-in env by id.
    pub fn builtin(id: impl Into<String>) -> Self {
        Self { id: id.into(), observation_space: None, action_space: None, spaces_from_first_actor: false }
    }

    /// True when the spaces are still to come from the first actor that registers: `spaces_from_first_actor` is
    /// set, the env is not built in and the config gives no spaces.
    pub fn awaits_actor_spaces(&self) -> bool {
        self.spaces_from_first_actor
            && !self.is_builtin()
            && self.observation_space.is_none()
            && self.action_space.is_none()
    }

    /// This env with its spaces written in the config (as taken from an actor).
    pub fn with_spaces(&self, observation_space: &common::env::Space, action_space: &common::env::Space) -> Self {
        Self {
            observation_space: Some(observation_space.to_string()),
            action_space: Some(action_space.to_string()),
            ..self.clone()
        }
    }

    /// True when the learner can build this env itself (for local actors, `eval` and `render`).
    pub fn is_builtin(&self) -> bool {
        common::env::spec(&self.id).is_ok()
    }

    /// The (observation, action) spaces: the configured ones, else the built-in env's.
    pub fn spaces(&self) -> Result<(common::env::Space, common::env::Space), EnvSpecError> {
        let builtin = common::env::make(&self.id).ok().map(|e| (e.observation_space(), e.action_space()));
        let given = match (&self.observation_space, &self.action_space) {
            (Some(o), Some(a)) => Some((o.parse::<Space>()?, a.parse::<Space>()?)),
            (None, None) => None,
            _ => return Err(EnvSpecError::OneSpace),
        };
        let (obs, action) = match (builtin, given) {
            (Some(b), None) => b,
            (None, Some(g)) => g,
            (Some(b), Some(g)) => {
                for (which, builtin, given) in [("observation", &b.0, &g.0), ("action", &b.1, &g.1)] {
                    if builtin != given {
                        return Err(EnvSpecError::Differs {
                            id: self.id.clone(),
                            which,
                            builtin: builtin.to_string(),
                            given: given.to_string(),
                        });
                    }
                }
                b
            }
            (None, None) => {
                return Err(EnvSpecError::Unknown { id: self.id.clone(), known: common::env::ENV_IDS.join(", ") });
            }
        };
        if !matches!(obs, Space::Box { .. }) {
            return Err(EnvSpecError::ObservationsNotBox(obs.to_string()));
        }
        action.check_action_space()?;
        for (which, dim) in [("observation", obs.flat_dim()), ("action", Head::for_space(&action).logits_dim())] {
            if dim > MAX_SPACE_DIM {
                return Err(EnvSpecError::TooLarge { which, dim });
            }
        }
        Ok((obs, action))
    }
}

/// Where the update runs (`device`): `cpu`, or `cuda` / `cuda:N`. Plain data; the candle backend opens it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// The host CPU.
    Cpu,
    /// The CUDA device of this ordinal.
    Cuda(usize),
}

impl DeviceKind {
    /// Parses `cpu`, `cuda` or `cuda:N`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        match spec.trim() {
            "cpu" => Ok(DeviceKind::Cpu),
            "cuda" => Ok(DeviceKind::Cuda(0)),
            s => match s.strip_prefix("cuda:") {
                Some(n) => n.parse().map(DeviceKind::Cuda).map_err(|_| format!("bad cuda ordinal in device {s:?}")),
                None => Err(format!("unknown device {s:?}; expected cpu, cuda or cuda:N")),
            },
        }
    }
}

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// TOML syntax or type error.
    #[error("invalid config: {0}")]
    Parse(String),
    /// An override is not `key=value`.
    #[error("override {0:?} is not of the form key=value (e.g. ppo.learning_rate=3e-4)")]
    Override(String),
    /// A value out of its range.
    #[error("config key {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

impl TrainConfig {
    /// Reads `path` (or defaults when `None`), applies `key=value` overrides (TOML values; dotted keys), and
    /// validates.
    pub fn load(path: Option<&std::path::Path>, overrides: &[String]) -> Result<Self, ConfigError> {
        Self::load_layers(path, toml::Table::new(), overrides)
    }

    /// Like [`TrainConfig::load`], with a table of typed values between the file and the `key=value` overrides:
    /// the command line's flags, serialised under their config keys (a nested table per section) and merged key
    /// by key over the file.
    pub fn load_layers(
        path: Option<&std::path::Path>,
        flags: toml::Table,
        overrides: &[String],
    ) -> Result<Self, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Read { path: p.into(), source })?,
            None => String::new(),
        };
        let mut doc: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        merge(&mut doc, flags);
        for o in overrides {
            apply_override(&mut doc, o)?;
        }
        let cfg: TrainConfig =
            toml::Value::Table(doc).try_into().map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The `device` key as a [`DeviceKind`].
    pub fn device_kind(&self) -> Result<DeviceKind, ConfigError> {
        DeviceKind::parse(&self.device).map_err(|reason| ConfigError::Invalid { key: "device", reason })
    }

    /// Samples per update.
    pub fn batch_size(&self) -> usize {
        match self.ppo.batch_size {
            0 => self.actors.count * self.actors.num_envs * self.actors.rollout_steps,
            n => n,
        }
    }

    /// Checks ranges; the error names the key and the value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let check = |ok: bool, key: &'static str, reason: String| match ok {
            true => Ok(()),
            false => Err(ConfigError::Invalid { key, reason }),
        };
        let at_least_1 = |key, n: usize| check(n >= 1, key, format!("must be at least 1, not {n}"));
        let positive = |x: f64| x > 0.0 && x.is_finite();
        let must_be_positive = |key, x: f64| check(positive(x), key, format!("must be positive and finite, not {x}"));
        let (p, s) = (&self.ppo, &self.server);
        if let Err(e) = self.env.spaces()
            && !self.env.awaits_actor_spaces()
        {
            return Err(ConfigError::Invalid { key: "env", reason: e.to_string() });
        }
        at_least_1("actors.count", self.actors.count)?;
        at_least_1("actors.num_envs", self.actors.num_envs)?;
        at_least_1("actors.rollout_steps", self.actors.rollout_steps)?;
        must_be_positive("ppo.learning_rate", p.learning_rate)?;
        for (key, x) in [("ppo.gamma", p.gamma), ("ppo.gae_lambda", p.gae_lambda)] {
            check((0.0..=1.0).contains(&x), key, format!("must be in [0, 1], not {x}"))?;
        }
        at_least_1("ppo.num_epochs", p.num_epochs)?;
        at_least_1("ppo.minibatch_size", p.minibatch_size)?;
        let batch = self.batch_size();
        check(
            p.minibatch_size <= batch,
            "ppo.minibatch_size",
            format!(
                "{} exceeds the batch size, {batch} (ppo.batch_size, or actors.count x actors.num_envs x \
                 actors.rollout_steps)",
                p.minibatch_size
            ),
        )?;
        // A recurrent model's minibatches are whole sequences of `rollout_steps` rows.
        let steps = self.actors.rollout_steps;
        check(
            self.model.core == common::model::CoreKind::None || p.minibatch_size.is_multiple_of(steps),
            "ppo.minibatch_size",
            format!(
                "{} is not a whole number of sequences: a recurrent model trains on minibatches of whole sequences \
                 of actors.rollout_steps = {steps} steps",
                p.minibatch_size
            ),
        )?;
        must_be_positive("ppo.clip_coef", p.clip_coef)?;
        must_be_positive("ppo.max_grad_norm", p.max_grad_norm)?;
        must_be_positive("ppo.kl_target", p.kl_target)?;
        check(
            p.kl_beta >= 0.0 && p.kl_beta.is_finite(),
            "ppo.kl_beta",
            format!("must be finite and >= 0, not {}", p.kl_beta),
        )?;
        at_least_1("server.queue_capacity", s.queue_capacity)?;
        check(
            s.max_message_bytes >= 1024,
            "server.max_message_bytes",
            format!("must be at least 1024, not {}", s.max_message_bytes),
        )?;
        for (key, bound) in [
            ("server.max_abs_reward", s.max_abs_reward),
            ("server.max_abs_observation", s.max_abs_observation),
            ("server.max_abs_value", s.max_abs_value),
            ("server.max_abs_action", s.max_abs_action),
            ("server.max_abs_log_prob_per_dim", s.max_abs_log_prob_per_dim),
        ] {
            must_be_positive(key, bound)?;
        }
        at_least_1("server.max_actors", s.max_actors)?;
        at_least_1("server.max_actor_name_bytes", s.max_actor_name_bytes)?;
        check(
            positive(s.actor_idle_seconds) && s.actor_idle_seconds <= 1e9,
            "server.actor_idle_seconds",
            format!("must be positive and at most 1e9 seconds, not {}", s.actor_idle_seconds),
        )?;
        check(
            (0.0..=1e9).contains(&s.registration_grace_seconds),
            "server.registration_grace_seconds",
            format!("must be in [0, 1e9] seconds, not {}", s.registration_grace_seconds),
        )?;
        at_least_1("server.max_idle_registrations_per_peer", s.max_idle_registrations_per_peer)?;
        check(
            !self.model.hidden_sizes.is_empty() && !self.model.hidden_sizes.contains(&0),
            "model.hidden_sizes",
            format!("needs at least one layer and no zero width, not {:?}", self.model.hidden_sizes),
        )?;
        must_be_positive("normalize.obs_clip", f64::from(self.normalize.obs_clip))?;
        check(
            (1..=2).contains(&self.threads),
            "threads",
            format!("must be 1 or 2 (one per net), not {}", self.threads),
        )?;
        check(
            (0.0..=1e6).contains(&self.log_interval_seconds),
            "log_interval_seconds",
            format!("must be in [0, 1e6] seconds, not {}", self.log_interval_seconds),
        )?;
        at_least_1("return_window", self.return_window)?;
        if let Some(target) = self.target_return {
            check(!target.is_nan(), "target_return", "must be a number, not NaN (leave it out for none)".into())?;
        }
        if self.backend == BackendKind::Fused && self.device_kind()? != DeviceKind::Cpu {
            return check(
                false,
                "backend",
                "the fused backend runs on the CPU only; use backend = \"candle\" with CUDA".into(),
            );
        }
        Ok(())
    }
}

/// Sets a dotted `key=value` in `doc`; the value is parsed as TOML, falling back to a plain string.
/// Merges `layer` into `doc` key by key: tables recursively, any other value replaces the one below.
fn merge(doc: &mut toml::Table, layer: toml::Table) {
    for (key, value) in layer {
        match (doc.get_mut(&key), value) {
            (Some(toml::Value::Table(below)), toml::Value::Table(above)) => merge(below, above),
            (_, value) => {
                doc.insert(key, value);
            }
        }
    }
}

fn apply_override(doc: &mut toml::Table, spec: &str) -> Result<(), ConfigError> {
    let (key, raw) = spec.split_once('=').ok_or_else(|| ConfigError::Override(spec.into()))?;
    let value: toml::Value = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let mut parts: Vec<&str> = key.trim().split('.').collect();
    let last = parts.pop().filter(|k| !k.is_empty()).ok_or_else(|| ConfigError::Override(spec.into()))?;
    let mut table = doc;
    for part in parts {
        let entry = table.entry(part.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry.as_table_mut().ok_or_else(|| ConfigError::Override(spec.into()))?;
    }
    table.insert(last.to_string(), value);
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_config_loads_with_its_spaces() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let cfg = TrainConfig::load(Some(&path), &[]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                cfg.env.spaces().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                names.push(path.file_name().unwrap().to_string_lossy().into_owned());
            }
        }
        assert!(names.len() >= 9, "configs found: {names:?}");
    }

    #[test]
    fn overrides_and_validation_name_the_key() {
        let cfg = TrainConfig::load(None, &["ppo.learning_rate=3e-4".into(), "env=Pendulum-v1".into()]).unwrap();
        assert_eq!(cfg.ppo.learning_rate, 3e-4);
        assert_eq!(cfg.env.id, "Pendulum-v1");
        let err = TrainConfig::load(None, &["ppo.gamma=2.0".into()]).unwrap_err().to_string();
        assert!(err.contains("ppo.gamma"), "{err}");
        // Each bad value is reported under its own key, with the value.
        for (set, key, shown) in [
            ("ppo.minibatch_size=0", "ppo.minibatch_size", "not 0"),
            ("ppo.max_grad_norm=0", "ppo.max_grad_norm", "not 0"),
            ("ppo.kl_target=-1", "ppo.kl_target", "not -1"),
            ("ppo.learning_rate=inf", "ppo.learning_rate", "finite, not inf"),
            ("ppo.gae_lambda=1.5", "ppo.gae_lambda", "not 1.5"),
            ("actors.rollout_steps=0", "actors.rollout_steps", "not 0"),
            ("ppo.batch_size=3", "ppo.minibatch_size", "the batch size, 3"),
            ("server.max_abs_value=0", "server.max_abs_value", "not 0"),
            ("server.max_message_bytes=10", "server.max_message_bytes", "not 10"),
            ("target_return=nan", "target_return", "NaN"),
        ] {
            let err = TrainConfig::load(None, &[set.into()]).unwrap_err().to_string();
            assert!(err.contains(&format!("config key {key}:")) && err.contains(shown), "{set}: {err}");
        }
        let err = TrainConfig::load(None, &["ppo.lr=1".into()]).unwrap_err().to_string();
        assert!(err.contains("unknown field"), "{err}");
        assert!(TrainConfig::load(None, &["nokey".into()]).is_err());
    }

    #[test]
    fn registry_keys_default_validate_and_reach_the_limits() {
        let limits = TrainConfig::default().server.registry_limits();
        assert_eq!((limits.grace, limits.max_idle_per_peer), (Duration::from_secs(5), 32));
        let cfg = TrainConfig::load(
            None,
            &["server.registration_grace_seconds=0".into(), "server.max_idle_registrations_per_peer=3".into()],
        )
        .unwrap();
        let limits = cfg.server.registry_limits();
        assert_eq!((limits.grace, limits.max_idle_per_peer), (Duration::ZERO, 3));
        for (key, value) in [
            ("server.registration_grace_seconds", "-1"),
            ("server.registration_grace_seconds", "nan"),
            ("server.registration_grace_seconds", "2e9"),
            ("server.max_idle_registrations_per_peer", "0"),
        ] {
            let err = TrainConfig::load(None, &[format!("{key}={value}")]).unwrap_err().to_string();
            assert!(err.contains(key), "{key}={value}: {err}");
        }
    }

    #[test]
    fn env_spaces_come_from_the_config_or_the_builtin_registry() {
        use common::env::Space;
        let spec =
            "[env]\nid = \"Corridor-v0\"\nobservation_space = \"Box(0, 1, (2,))\"\naction_space = \"Discrete(2)\"\n";
        let cfg: TrainConfig = toml::from_str(spec).unwrap();
        let (obs, action) = cfg.env.spaces().unwrap();
        assert_eq!((obs.flat_dim(), action), (2, Space::Discrete { n: 2 }));
        assert!(!cfg.env.is_builtin());
        let written = toml::to_string(&cfg).unwrap();
        assert!(written.contains("[env]") && written.contains("action_space = \"Discrete(2)\""), "{written}");
        assert_eq!(toml::from_str::<TrainConfig>(&written).unwrap(), cfg);
        let builtin = TrainConfig::default();
        assert!(toml::to_string(&builtin).unwrap().contains("env = \"CartPole-v1\""));
        assert_eq!(builtin.env.spaces().unwrap().1, Space::Discrete { n: 2 });

        let err =
            |text: &str| TrainConfig::load_layers(None, toml::from_str(text).unwrap(), &[]).unwrap_err().to_string();
        assert!(err("env = \"Corridor-v0\"").contains("not a built-in env"));
        assert!(err("[env]\nid = \"X\"\naction_space = \"Discrete(2)\"").contains("both"));
        assert!(
            err("[env]\nid = \"X\"\nobservation_space = \"Discrete(3)\"\naction_space = \"Discrete(2)\"")
                .contains("must be a Box")
        );
        assert!(
            err("[env]\nid = \"X\"\nobservation_space = \"Box(0, 1)\"\naction_space = \"Tuple()\"").contains("Tuple()")
        );
        let differs =
            err("[env]\nid = \"CartPole-v1\"\nobservation_space = \"Box(0, 1, (4,))\"\naction_space = \"Discrete(2)\"");
        assert!(differs.contains("observation space of CartPole-v1"), "{differs}");
        assert!(toml::from_str::<TrainConfig>("[env]\nid = \"X\"\nspace = \"Discrete(2)\"").is_err(), "unknown key");
    }

    #[test]
    fn spaces_can_wait_for_the_first_actor_and_are_bounded() {
        use common::env::Space;
        let load = |text: &str| TrainConfig::load_layers(None, toml::from_str(text).unwrap(), &[]);
        let cfg = load("[env]\nid = \"Reach-v0\"\nspaces_from_first_actor = true").unwrap();
        assert!(cfg.env.awaits_actor_spaces());
        let (obs, action) = (Space::vector(vec![-1.0; 2], vec![1.0; 2]), Space::Discrete { n: 3 });
        let adopted = cfg.env.with_spaces(&obs, &action);
        assert!(!adopted.awaits_actor_spaces());
        assert_eq!(adopted.spaces().unwrap(), (obs, action));
        let written = toml::to_string(&TrainConfig { env: adopted.clone(), ..cfg }).unwrap();
        assert_eq!(toml::from_str::<TrainConfig>(&written).unwrap().env, adopted);
        // Off by default, and meaningless for a built-in env, whose spaces are known.
        assert!(load("[env]\nid = \"Reach-v0\"").is_err());
        assert!(
            !load("[env]\nid = \"CartPole-v1\"\nspaces_from_first_actor = true").unwrap().env.awaits_actor_spaces()
        );
        let huge = format!("Box(0, 1, ({},))", MAX_SPACE_DIM + 1);
        let err = adopted.with_spaces(&huge.parse().unwrap(), &Space::Discrete { n: 2 }).spaces().unwrap_err();
        assert!(err.to_string().contains("65537 dimensions"), "{err}");
    }

    #[test]
    fn shipped_configs_parse_and_validate() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                TrainConfig::load(Some(&path), &[]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                n += 1;
            }
        }
        assert!(n >= 5, "expected a config per env, found {n}");
    }

    #[test]
    fn devices_parse_without_opening() {
        assert_eq!(DeviceKind::parse("cpu"), Ok(DeviceKind::Cpu));
        assert_eq!(DeviceKind::parse(" cuda "), Ok(DeviceKind::Cuda(0)));
        assert_eq!(DeviceKind::parse("cuda:3"), Ok(DeviceKind::Cuda(3)));
        assert!(DeviceKind::parse("cuda:x").is_err_and(|e| e.contains("ordinal")));
        assert!(DeviceKind::parse("tpu").is_err_and(|e| e.contains("expected cpu")));
    }

    /// A recurrent model's minibatches are whole sequences: a minibatch size that is not a multiple of the
    /// rollout length is a config error naming both keys.
    #[test]
    fn recurrent_minibatches_are_whole_sequences() {
        let with = |minibatch: usize| {
            let overrides = [
                "model.shared_trunk=true".to_string(),
                "model.core=\"gru\"".to_string(),
                "actors.rollout_steps=32".to_string(),
                format!("ppo.minibatch_size={minibatch}"),
            ];
            TrainConfig::load(None, &overrides)
        };
        assert!(with(64).is_ok());
        let err = with(48).unwrap_err().to_string();
        assert!(err.contains("ppo.minibatch_size") && err.contains("actors.rollout_steps = 32"), "{err}");
        assert!(with(16).is_err(), "less than one sequence");
    }
}
