//! Gymnasium-exact classic-control environments, the MinAtar games, two memory tasks of proxima's own, a registry
//! by id and a vectorised env.
//!
//! Every classic-control environment reproduces gymnasium 1.x's dynamics, constants, rewards and termination, and
//! every MinAtar game the Python `minatar` package's (1.0.15, through its gymnasium wrapper). The `proxima/*`
//! envs test recurrent (memory) policies: [`CartPoleNoVelocity`] (CartPole-v1 observed without its velocities)
//! and [`Recall`] (name, when asked, the cue shown at the episode's start). The time limit that gymnasium's
//! `make` adds through `TimeLimit` is applied by [`TimeLimit`], so `step` reports `terminated` (a real end of the
//! task) and `truncated` (the time limit) separately.

mod acrobot;
mod cartpole;
mod cartpole_no_velocity;
mod continuous_mountain_car;
mod helpers;
mod minatar;
mod mountain_car;
mod notation;
mod pendulum;
mod recall;
mod registry;
mod space;
mod vec_env;

pub use acrobot::Acrobot;
pub use cartpole::CartPole;
pub use cartpole_no_velocity::CartPoleNoVelocity;
pub use continuous_mountain_car::ContinuousMountainCar;
pub use mountain_car::MountainCar;
pub use notation::NotationError;
pub use pendulum::Pendulum;
pub use recall::Recall;
pub use registry::{ENV_IDS, EnvSpec, make, make_dynamics, spec};
pub use space::{Dtype, Space, SpaceError};
pub use vec_env::{EpisodeStats, StepBatch, VecEnv};

use rand_chacha::ChaCha8Rng;

/// Errors from building or driving an environment.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// The id is not registered.
    #[error("unknown env id {id:?}; known ids: {known}")]
    UnknownId { id: String, known: String },
    /// A state vector of the wrong length was given to `set_state`.
    #[error("{env} state must have {expected} values, got {got}")]
    StateLength { env: &'static str, expected: usize, got: usize },
    /// An action outside the action space.
    #[error("{env}: invalid action: {reason}")]
    InvalidAction { env: &'static str, reason: String },
    /// A state vector with a value the env's state cannot take (a discrete state's value that is not one).
    #[error("{env}: invalid state: {reason}")]
    InvalidState { env: &'static str, reason: String },
    /// `set_state` on a user's env, whose state the actor does not know.
    #[error("{env}: a user env's state cannot be set")]
    OpaqueState { env: &'static str },
    /// `set_state` on a built-in env whose state is not a flat vector (the MinAtar games).
    #[error("{env}: the state of this env cannot be set")]
    NoStateAccess { env: &'static str },
}

/// The outcome of one environment step. The observation is written into the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transition {
    /// The reward gymnasium returns for this step (a Python float, so f64).
    pub reward: f64,
    /// The task ended (failure or success); do not bootstrap.
    pub terminated: bool,
    /// The episode was cut by the time limit; bootstrap from the final observation.
    pub truncated: bool,
}

/// An environment with gymnasium's semantics, without the time limit (gymnasium's `env.unwrapped`): implement it
/// for your own env and run it as an actor with [`TimeLimit::custom`] and an [`EnvFactory`].
///
/// Observations are written into the caller's buffer (`observation_space().flat_dim()` values, row-major for a
/// shaped `Box`); a uint8 `Box` (an image, `Space::shaped(.., Dtype::Uint8)`) takes whole numbers in `0..=255`,
/// which the actor sends as one byte each (any other value stops the actor with an error naming it). Actions are
/// passed as an `f32` slice: one element holding the index for `Discrete`, `flat_dim()` elements for `Box`
/// (already clipped to its bounds). The actor validates actions with [`Space::check`] before stepping.
pub trait Env: Send {
    /// Gymnasium-style id, e.g. `"CartPole-v1"`; the learner must train the same id.
    fn id(&self) -> &'static str;
    /// The observation space: a `Box` of any shape, float32 or uint8.
    fn observation_space(&self) -> Space;
    /// The action space.
    fn action_space(&self) -> Space;
    /// Reseeds a random generator the env keeps itself, apart from the `rng` that `reset` is given: what
    /// gymnasium's `reset(seed=...)` does to such an env (MinAtar's numpy `RandomState`). [`TimeLimit::reset`]
    /// calls it with `Some(seed)`'s seed, after reseeding its own `rng` and before [`Env::reset`]; never with
    /// `None`. The default does nothing: envs that draw only from `reset`'s `rng` need nothing here.
    fn seed(&mut self, _seed: u64) {}
    /// Starts an episode from a state drawn with `rng` (seeded by `reset(seed)`) and writes its observation.
    fn reset(&mut self, rng: &mut ChaCha8Rng, obs: &mut [f32]);
    /// Advances one step with `action` and writes the new observation; `truncated` is the time limit's job
    /// ([`TimeLimit`]), so an env reports only `terminated`.
    fn step(&mut self, action: &[f32], obs: &mut [f32]) -> Transition;
}

/// A built-in env's state access, for the conformance tests against gymnasium and for rendering.
pub trait Dynamics: Env {
    /// The internal state in `env.unwrapped.state` layout (f64).
    fn state(&self) -> Vec<f64>;
    /// Overwrites the internal state (same layout as [`Dynamics::state`]).
    fn set_state(&mut self, state: &[f64]) -> Result<(), EnvError>;
    /// Writes the observation of the current state.
    fn observe(&self, obs: &mut [f32]);
}

/// A user's [`Env`] seen as [`Dynamics`]: its state is opaque (empty, and cannot be set); `observe` writes the
/// last observation it produced.
struct Opaque<E> {
    env: E,
    last_obs: Vec<f32>,
}

impl<E: Env> Env for Opaque<E> {
    fn id(&self) -> &'static str {
        self.env.id()
    }

    fn observation_space(&self) -> Space {
        self.env.observation_space()
    }

    fn action_space(&self) -> Space {
        self.env.action_space()
    }

    fn seed(&mut self, seed: u64) {
        self.env.seed(seed);
    }

    fn reset(&mut self, rng: &mut ChaCha8Rng, obs: &mut [f32]) {
        self.env.reset(rng, obs);
        self.last_obs.clear();
        self.last_obs.extend_from_slice(obs);
    }

    fn step(&mut self, action: &[f32], obs: &mut [f32]) -> Transition {
        let t = self.env.step(action, obs);
        self.last_obs.clear();
        self.last_obs.extend_from_slice(obs);
        t
    }
}

impl<E: Env> Dynamics for Opaque<E> {
    fn state(&self) -> Vec<f64> {
        Vec::new()
    }

    fn set_state(&mut self, _state: &[f64]) -> Result<(), EnvError> {
        Err(EnvError::OpaqueState { env: self.env.id() })
    }

    fn observe(&self, obs: &mut [f32]) {
        let n = obs.len().min(self.last_obs.len());
        obs[..n].copy_from_slice(&self.last_obs[..n]);
    }
}

/// Builds one environment, time limit included: a built-in one ([`builtin_factory`]) or a user's
/// (`Arc::new(|| Ok(TimeLimit::custom(MyEnv::default(), 200)))`). Actors call it once per vectorised env.
pub type EnvFactory = std::sync::Arc<dyn Fn() -> Result<TimeLimit, EnvError> + Send + Sync>;

/// The factory of the built-in env `id` ([`make`]).
pub fn builtin_factory(id: &str) -> EnvFactory {
    let id = id.to_string();
    std::sync::Arc::new(move || make(&id))
}

/// A step limit that never truncates: for envs whose registration declares none (the MinAtar games,
/// `proxima/Recall-v0`).
pub const NO_TIME_LIMIT: u32 = u32::MAX;

/// An environment as gymnasium's `make` returns it: dynamics, a seeded RNG and the time limit.
pub struct TimeLimit {
    dynamics: Box<dyn Dynamics>,
    rng: ChaCha8Rng,
    max_episode_steps: u32,
    elapsed: u32,
}

impl TimeLimit {
    /// Wraps `dynamics` with a limit of `max_episode_steps` steps per episode ([`NO_TIME_LIMIT`]: none).
    pub fn new(dynamics: Box<dyn Dynamics>, max_episode_steps: u32) -> Self {
        use rand::SeedableRng;
        Self { dynamics, rng: ChaCha8Rng::seed_from_u64(0), max_episode_steps, elapsed: 0 }
    }

    /// Wraps a user's `env` with a limit of `max_episode_steps` steps per episode.
    pub fn custom(env: impl Env + 'static, max_episode_steps: u32) -> Self {
        Self::new(Box::new(Opaque { env, last_obs: Vec::new() }), max_episode_steps)
    }

    /// Gymnasium id.
    pub fn id(&self) -> &'static str {
        self.dynamics.id()
    }

    /// Observation space.
    pub fn observation_space(&self) -> Space {
        self.dynamics.observation_space()
    }

    /// Action space.
    pub fn action_space(&self) -> Space {
        self.dynamics.action_space()
    }

    /// Episode step limit.
    pub fn max_episode_steps(&self) -> u32 {
        self.max_episode_steps
    }

    /// Starts a new episode; `Some(seed)` reseeds the RNG first, and the env's own generator ([`Env::seed`])
    /// (gymnasium's `reset(seed=...)`).
    pub fn reset(&mut self, seed: Option<u64>, obs: &mut [f32]) {
        if let Some(seed) = seed {
            use rand::SeedableRng;
            self.rng = ChaCha8Rng::seed_from_u64(seed);
            self.dynamics.seed(seed);
        }
        self.elapsed = 0;
        self.dynamics.reset(&mut self.rng, obs);
    }

    /// One step; sets `truncated` once the episode reaches the step limit.
    pub fn step(&mut self, action: &[f32], obs: &mut [f32]) -> Transition {
        let mut t = self.dynamics.step(action, obs);
        self.elapsed = self.elapsed.saturating_add(1);
        t.truncated = self.max_episode_steps != NO_TIME_LIMIT && self.elapsed >= self.max_episode_steps;
        t
    }

    /// The wrapped dynamics.
    pub fn unwrapped(&mut self) -> &mut dyn Dynamics {
        self.dynamics.as_mut()
    }
}
