//! Gymnasium-exact classic-control environments, a registry by id and a vectorised env.
//!
//! Every environment reproduces gymnasium 1.x's dynamics, constants, rewards and termination; the time limit
//! that gymnasium's `make` adds through `TimeLimit` is applied by [`TimeLimit`], so `step` reports
//! `terminated` (a real end of the task) and `truncated` (the time limit) separately.

mod acrobot;
mod cartpole;
mod continuous_mountain_car;
mod helpers;
mod mountain_car;
mod notation;
mod pendulum;
mod registry;
mod space;
mod vec_env;

pub use acrobot::Acrobot;
pub use cartpole::CartPole;
pub use continuous_mountain_car::ContinuousMountainCar;
pub use mountain_car::MountainCar;
pub use notation::NotationError;
pub use pendulum::Pendulum;
pub use registry::{ENV_IDS, EnvSpec, make, make_dynamics, spec};
pub use space::{Space, SpaceError};
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

/// The raw dynamics of one environment, without the time limit (gymnasium's `env.unwrapped`).
///
/// Actions are passed as an `f32` slice: one element holding the index for `Discrete`, `shape` elements for `Box`.
pub trait Dynamics: Send {
    /// Gymnasium id, e.g. `"CartPole-v1"`.
    fn id(&self) -> &'static str;
    /// The observation space (`Box`).
    fn observation_space(&self) -> Space;
    /// The action space.
    fn action_space(&self) -> Space;
    /// Draws a fresh initial state from `rng` (gymnasium's reset distribution) and writes the observation.
    fn reset(&mut self, rng: &mut ChaCha8Rng, obs: &mut [f32]);
    /// Advances one step with `action`, writes the new observation; `truncated` is always false here.
    ///
    /// Callers validate `action` with [`Space::check`]; an invalid one never panics, it makes the state NaN.
    fn step(&mut self, action: &[f32], obs: &mut [f32]) -> Transition;
    /// The internal state in `env.unwrapped.state` layout (f64).
    fn state(&self) -> Vec<f64>;
    /// Overwrites the internal state (same layout as [`Dynamics::state`]).
    fn set_state(&mut self, state: &[f64]) -> Result<(), EnvError>;
    /// Writes the observation of the current state.
    fn observe(&self, obs: &mut [f32]);
}

/// An environment as gymnasium's `make` returns it: dynamics, a seeded RNG and the time limit.
pub struct TimeLimit {
    dynamics: Box<dyn Dynamics>,
    rng: ChaCha8Rng,
    max_episode_steps: u32,
    elapsed: u32,
}

impl TimeLimit {
    /// Wraps `dynamics` with a limit of `max_episode_steps` steps per episode.
    pub fn new(dynamics: Box<dyn Dynamics>, max_episode_steps: u32) -> Self {
        use rand::SeedableRng;
        Self { dynamics, rng: ChaCha8Rng::seed_from_u64(0), max_episode_steps, elapsed: 0 }
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

    /// Starts a new episode; `Some(seed)` reseeds the RNG first (gymnasium's `reset(seed=...)`).
    pub fn reset(&mut self, seed: Option<u64>, obs: &mut [f32]) {
        if let Some(seed) = seed {
            use rand::SeedableRng;
            self.rng = ChaCha8Rng::seed_from_u64(seed);
        }
        self.elapsed = 0;
        self.dynamics.reset(&mut self.rng, obs);
    }

    /// One step; sets `truncated` once the episode reaches the step limit.
    pub fn step(&mut self, action: &[f32], obs: &mut [f32]) -> Transition {
        let mut t = self.dynamics.step(action, obs);
        self.elapsed += 1;
        t.truncated = self.elapsed >= self.max_episode_steps;
        t
    }

    /// The wrapped dynamics.
    pub fn unwrapped(&mut self) -> &mut dyn Dynamics {
        self.dynamics.as_mut()
    }
}
