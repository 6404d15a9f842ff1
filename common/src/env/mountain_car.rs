//! MountainCar-v0 (gymnasium `envs/classic_control/mountain_car.py`): drive an underpowered car up a hill, and
//! the track both mountain-car tasks share.

use std::ops::{Add, Neg};

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::helpers::{clip, discrete_value, state_array, write_obs};
use super::{Dynamics, Env, EnvError, Space, Transition};

pub(super) const MIN_POSITION: f64 = -1.2;
pub(super) const MAX_POSITION: f64 = 0.6;
pub(super) const MAX_SPEED: f64 = 0.07;
/// Coefficient of the hill's slope `cos(3 p)` in the velocity update.
pub(super) const GRAVITY: f64 = 0.0025;
const FORCE: f64 = 0.001;
/// `action - 1` for each discrete action: push left, no push, push right.
const PUSH: [f64; 3] = [-1.0, 0.0, 1.0];
const TRACK: Track<f64> =
    Track { min_position: MIN_POSITION, max_position: MAX_POSITION, max_speed: MAX_SPEED, goal_position: 0.5 };

/// The part of the mountain-car step both tasks share, in the float type the task computes in.
pub(super) struct Track<T> {
    /// Left end of the track, an inelastic wall.
    pub(super) min_position: T,
    /// Right end of the track.
    pub(super) max_position: T,
    /// Speed limit in both directions.
    pub(super) max_speed: T,
    /// The goal is reached at `position >= goal_position` with a non-negative velocity.
    pub(super) goal_position: T,
}

impl<T: Copy + PartialOrd + Add<Output = T> + Neg<Output = T> + Default> Track<T> {
    /// Adds `dv` to the velocity and clips it, moves and clips the position, stops the car at the left wall
    /// (inelastic collision). Returns the new `[position, velocity]` and whether the goal is reached.
    pub(super) fn advance(&self, position: T, velocity: T, dv: T) -> ([T; 2], bool) {
        let zero = T::default();
        let mut velocity = clip(velocity + dv, -self.max_speed, self.max_speed);
        let position = clip(position + velocity, self.min_position, self.max_position);
        if position == self.min_position && velocity < zero {
            velocity = zero;
        }
        ([position, velocity], position >= self.goal_position && velocity >= zero)
    }
}

/// The observation space of both tasks: `[position, velocity]`.
pub(super) fn observation_space() -> Space {
    Space::vector(vec![MIN_POSITION as f32, -MAX_SPEED as f32], vec![MAX_POSITION as f32, MAX_SPEED as f32])
}

/// The initial position of both tasks, U(-0.6, -0.4); the car starts at rest.
pub(super) fn initial_position(rng: &mut ChaCha8Rng) -> f64 {
    rng.random_range(-0.6..-0.4)
}

/// MountainCar-v0: state `[position, velocity]`, actions `0, 1, 2` (push left, none, right), reward `-1` per
/// step including the last; the episode ends at `position >= 0.5`. An action outside `Discrete(3)` makes the
/// state NaN.
#[derive(Debug, Clone, Default)]
pub struct MountainCar {
    state: [f64; 2],
}

impl Env for MountainCar {
    fn id(&self) -> &'static str {
        "MountainCar-v0"
    }

    fn observation_space(&self) -> Space {
        observation_space()
    }

    fn action_space(&self) -> Space {
        Space::Discrete { n: PUSH.len() }
    }

    fn reset(&mut self, rng: &mut ChaCha8Rng, obs: &mut [f32]) {
        self.state = [initial_position(rng), 0.0];
        self.observe(obs);
    }

    fn step(&mut self, action: &[f32], obs: &mut [f32]) -> Transition {
        let [position, velocity] = self.state;
        let dv = discrete_value(action, &PUSH) * FORCE + (3.0 * position).cos() * (-GRAVITY);
        let (state, terminated) = TRACK.advance(position, velocity, dv);
        self.state = state;
        self.observe(obs);
        Transition { reward: -1.0, terminated, truncated: false }
    }
}

impl Dynamics for MountainCar {
    fn state(&self) -> Vec<f64> {
        self.state.to_vec()
    }

    fn set_state(&mut self, state: &[f64]) -> Result<(), EnvError> {
        self.state = state_array(self.id(), state)?;
        Ok(())
    }

    fn observe(&self, obs: &mut [f32]) {
        write_obs(obs, self.state);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn step_from(state: [f64; 2], action: f32) -> ([f64; 2], Transition) {
        let mut env = MountainCar::default();
        env.set_state(&state).unwrap();
        let t = env.step(&[action], &mut [0.0; 2]);
        (env.state().try_into().unwrap(), t)
    }

    #[test]
    fn coasting_from_rest_follows_the_slope() {
        // v' = -0.0025 cos(-1.5) = -0.0025 * 0.0707372016677029, p' = -0.5 + v'.
        let ([p, v], t) = step_from([-0.5, 0.0], 1.0);
        let want_v = -0.0025 * 0.070_737_201_667_702_9;
        assert!((v - want_v).abs() < 1e-15, "{v}");
        assert!((p - (-0.5 + want_v)).abs() < 1e-15, "{p}");
        assert_eq!(t, Transition { reward: -1.0, terminated: false, truncated: false });
    }

    #[test]
    fn left_wall_stops_the_car() {
        let ([p, v], _) = step_from([-1.2, -0.05], 0.0);
        assert_eq!((p, v), (-1.2, 0.0));
    }

    #[test]
    fn speed_is_clipped() {
        // cos(3 * -pi/6) = 0: pushing right at top speed would exceed 0.07.
        let ([_, v], _) = step_from([-std::f64::consts::PI / 6.0, 0.07], 2.0);
        assert_eq!(v, 0.07);
    }

    #[test]
    fn goal_terminates_with_reward_minus_one() {
        let ([p, _], t) = step_from([0.49, 0.07], 2.0);
        assert!(p >= 0.5);
        assert_eq!((t.reward, t.terminated), (-1.0, true));
        assert!(!step_from([0.6, -0.001], 0.0).1.terminated, "past the goal but rolling back");
    }

    #[test]
    fn reset_starts_at_rest_in_the_valley() {
        use rand::SeedableRng;
        let mut env = MountainCar::default();
        let mut obs = [0.0; 2];
        env.reset(&mut ChaCha8Rng::seed_from_u64(1), &mut obs);
        assert!((-0.6..-0.4).contains(&obs[0]) && obs[1] == 0.0, "{obs:?}");
    }
}
