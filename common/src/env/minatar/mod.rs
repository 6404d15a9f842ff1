//! The five MinAtar games (Young & Tian, the Python `minatar` package 1.0.15), as its gymnasium wrapper
//! `minatar.gym` registers them under `MinAtar/<Game>-v1`: the game's minimal action set, sticky actions with
//! probability 0.1, difficulty ramping on, no time limit, observations `10 x 10 x channels` in the package's
//! channel order.
//!
//! Randomness is the package's, draw for draw: one numpy `RandomState` (MT19937, [`Mt19937`]) shared by the
//! sticky actions and the game, seeded by `reset(seed=s)` as `RandomState(s)` ([`Env::seed`]). A reset without a
//! seed continues the stream. An env never seeded starts from `RandomState(0)` (the package draws from the OS).

mod asterix;
mod breakout;
mod freeway;
mod grid;
mod rng;
mod seaquest;
mod space_invaders;

pub use asterix::Asterix;
pub use breakout::Breakout;
pub use freeway::Freeway;
pub use rng::Mt19937;
pub use seaquest::Seaquest;
pub use space_invaders::SpaceInvaders;

use rand_chacha::ChaCha8Rng;

use super::{Dtype, Dynamics, Env, EnvError, Space, Transition};
use grid::{Grid, SIDE};

/// Probability that the previous action is repeated instead of the chosen one.
const STICKY_ACTION_PROB: f64 = 0.1;

/// The six actions of every MinAtar game (`'n', 'l', 'u', 'r', 'd', 'f'`); each game's minimal set is a subset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    /// No-op.
    Noop,
    /// Left.
    Left,
    /// Up.
    Up,
    /// Right.
    Right,
    /// Down.
    Down,
    /// Fire.
    Fire,
}

/// One game's rules (the package's `environments/<game>.py`), driven by [`MinAtar`].
pub(super) trait Game: Default + Send + 'static {
    /// Gymnasium id.
    const ID: &'static str;
    /// Observation channels: 4, 6, 7 or [`MAX_CHANNELS`].
    const CHANNELS: usize;
    /// The minimal action set: gym action `i` plays `ACTIONS[i]`.
    const ACTIONS: &'static [Action];
    /// Starts an episode (the game's `reset`), drawing from `rng` where the package does.
    fn reset(&mut self, rng: &mut Mt19937);
    /// One frame with `action` (the game's `act`): the reward and whether the game is over. Once over, returns
    /// `(0, true)` and changes nothing.
    fn act(&mut self, action: Action, rng: &mut Mt19937) -> (i32, bool);
    /// Fills `out[..CHANNELS]` with the observation's channels (the game's `state`).
    fn channels(&self, out: &mut [Grid; MAX_CHANNELS]);
}

/// Channels of the widest game (Seaquest).
pub(super) const MAX_CHANNELS: usize = 10;

/// A MinAtar game as `gymnasium.make("MinAtar/<Game>-v1")` returns it (without the wrappers that only check).
///
/// An action that is not an index into the minimal action set steps nothing and draws nothing (the package raises
/// an `IndexError`): the observation is NaN and the reward NaN, visible to the caller.
pub struct MinAtar<G> {
    game: G,
    rng: Mt19937,
    /// The game action played last; kept across resets, as the package's `Environment.last_action` is.
    last_action: Action,
}

impl<G: Game> Default for MinAtar<G> {
    fn default() -> Self {
        Self { game: G::default(), rng: Mt19937::new(0), last_action: Action::Noop }
    }
}

impl<G: Game> MinAtar<G> {
    /// Writes the current observation.
    fn write(&self, obs: &mut [f32]) {
        let mut channels = [Grid::default(); MAX_CHANNELS];
        self.game.channels(&mut channels);
        // A constant depth per game, so the index arithmetic is by a constant.
        match G::CHANNELS {
            4 => grid::write_observation::<4>(&channels, obs),
            6 => grid::write_observation::<6>(&channels, obs),
            7 => grid::write_observation::<7>(&channels, obs),
            _ => grid::write_observation::<MAX_CHANNELS>(&channels, obs),
        }
    }
}

impl<G: Game> Env for MinAtar<G> {
    fn id(&self) -> &'static str {
        G::ID
    }

    fn observation_space(&self) -> Space {
        let n = SIDE * SIDE * G::CHANNELS;
        // What `Space::shaped(vec![0.0], vec![1.0], vec![10, 10, C], Dtype::Uint8)` builds, without its Result.
        Space::Box { low: vec![0.0; n], high: vec![1.0; n], shape: vec![SIDE, SIDE, G::CHANNELS], dtype: Dtype::Uint8 }
    }

    fn action_space(&self) -> Space {
        Space::Discrete { n: G::ACTIONS.len() }
    }

    fn seed(&mut self, seed: u64) {
        self.rng = Mt19937::new(seed);
    }

    fn reset(&mut self, _rng: &mut ChaCha8Rng, obs: &mut [f32]) {
        self.game.reset(&mut self.rng);
        self.write(obs);
    }

    fn step(&mut self, action: &[f32], obs: &mut [f32]) -> Transition {
        let chosen = match action {
            // A whole number (`as` saturates, and NaN becomes 0, which the comparison then refuses).
            [a] if (*a as usize) as f32 == *a => G::ACTIONS.get(*a as usize).copied(),
            _ => None,
        };
        let Some(mut action) = chosen else {
            obs.fill(f32::NAN);
            return Transition { reward: f64::NAN, terminated: false, truncated: false };
        };
        if self.rng.rand() < STICKY_ACTION_PROB {
            action = self.last_action;
        }
        self.last_action = action;
        let (reward, terminated) = self.game.act(action, &mut self.rng);
        self.write(obs);
        Transition { reward: f64::from(reward), terminated, truncated: false }
    }
}

impl<G: Game> Dynamics for MinAtar<G> {
    /// Empty: the game state is not a flat vector.
    fn state(&self) -> Vec<f64> {
        Vec::new()
    }

    fn set_state(&mut self, _state: &[f64]) -> Result<(), EnvError> {
        Err(EnvError::NoStateAccess { env: G::ID })
    }

    fn observe(&self, obs: &mut [f32]) {
        self.write(obs);
    }
}

/// `x` moved one cell in direction `right` (the games' `x += 1 if right else -1`).
#[inline]
fn step_x(x: i32, right: bool) -> i32 {
    if right { x + 1 } else { x - 1 }
}

/// Whether `x` lies outside the board's columns.
#[inline]
fn off_board(x: i32) -> bool {
    !(0..SIDE as i32).contains(&x)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn check_space<G: Game>() {
        let env = MinAtar::<G>::default();
        let shaped = Space::shaped(vec![0.0], vec![1.0], vec![10, 10, G::CHANNELS], Dtype::Uint8).unwrap();
        assert_eq!(env.observation_space(), shaped, "{}", G::ID);
        assert_eq!(env.observation_space().flat_dim(), 100 * G::CHANNELS);
    }

    #[test]
    fn observation_spaces_are_uint8_boxes() {
        check_space::<Breakout>();
        check_space::<Asterix>();
        check_space::<Freeway>();
        check_space::<SpaceInvaders>();
        check_space::<Seaquest>();
    }

    #[test]
    fn invalid_actions_step_nothing() {
        let mut env = MinAtar::<Breakout>::default();
        let mut obs = [0.0; 400];
        env.seed(3);
        env.reset(&mut ChaCha8Rng::seed_from_u64(0), &mut obs);
        let before = obs;
        for bad in [&[3.0][..], &[-1.0], &[0.5], &[f32::NAN], &[], &[0.0, 1.0]] {
            let t = env.step(bad, &mut obs);
            assert!(t.reward.is_nan() && !t.terminated && obs.iter().all(|o| o.is_nan()), "{bad:?}");
        }
        env.observe(&mut obs);
        assert_eq!(obs, before);
        assert!(env.set_state(&[]).is_err() && env.state().is_empty());
    }
}
