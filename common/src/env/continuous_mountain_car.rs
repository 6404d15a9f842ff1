//! MountainCarContinuous-v0 (gymnasium `envs/classic_control/continuous_mountain_car.py`): the mountain car with a
//! continuous engine force and an energy penalty.
//!
//! Gymnasium keeps this state as float32 between steps, and numpy's promotion rules (NEP 50) then do most of the
//! step in float32: a Python float meeting a float32 scalar is cast to float32, comparisons included. This file
//! mirrors that arithmetic operation by operation.

use rand_chacha::ChaCha8Rng;

use super::helpers::{clip, scalar_action, state_array, symmetric_box, write_obs};
use super::mountain_car::{GRAVITY, MAX_POSITION, MAX_SPEED, MIN_POSITION, Track, initial_position, observation_space};
use super::{Dynamics, Env, EnvError, Space, Transition};

const MIN_ACTION: f32 = -1.0;
const MAX_ACTION: f32 = 1.0;
const POWER: f64 = 0.0015;
const GOAL_REWARD: f64 = 100.0;
const TRACK: Track<f32> = Track {
    min_position: MIN_POSITION as f32,
    max_position: MAX_POSITION as f32,
    max_speed: MAX_SPEED as f32,
    goal_position: 0.45,
};

/// MountainCarContinuous-v0: state `[position, velocity]` stored as float32, action `Box(-1, 1, (1,))` (the force
/// is clipped to the bounds), reward `100` on reaching `position >= 0.45` minus `0.1 * action^2` of the raw,
/// unclipped action.
///
/// Gymnasium keeps its float64 reset draw until the first step; here the drawn position is rounded to float32 at
/// once (the observation is the same). [`Dynamics::set_state`] rounds to float32 as well. An action that does not
/// hold exactly one value makes the state NaN.
#[derive(Debug, Clone, Default)]
pub struct ContinuousMountainCar {
    state: [f32; 2],
}

impl Env for ContinuousMountainCar {
    fn id(&self) -> &'static str {
        "MountainCarContinuous-v0"
    }

    fn observation_space(&self) -> Space {
        observation_space()
    }

    fn action_space(&self) -> Space {
        symmetric_box(&[MAX_ACTION])
    }

    fn reset(&mut self, rng: &mut ChaCha8Rng, obs: &mut [f32]) {
        self.state = [initial_position(rng) as f32, 0.0];
        self.observe(obs);
    }

    fn step(&mut self, action: &[f32], obs: &mut [f32]) -> Transition {
        let action = scalar_action(action);
        let [position, velocity] = self.state;
        let slope = GRAVITY * f64::from(3.0 * position).cos();
        // `min(max(action, -1.0), 1.0)` returns a Python float when it clips and the float32 action otherwise,
        // which decides whether `force * power - slope` is evaluated in float64 or float32.
        let dv = if action.abs() > MAX_ACTION {
            (f64::from(clip(action, MIN_ACTION, MAX_ACTION)) * POWER - slope) as f32
        } else {
            action * POWER as f32 - slope as f32
        };
        let (state, terminated) = TRACK.advance(position, velocity, dv);
        self.state = state;
        self.observe(obs);
        let goal = if terminated { GOAL_REWARD } else { 0.0 };
        Transition { reward: goal - f64::from(action).powi(2) * 0.1, terminated, truncated: false }
    }
}

impl Dynamics for ContinuousMountainCar {
    fn state(&self) -> Vec<f64> {
        self.state.iter().map(|&s| f64::from(s)).collect()
    }

    fn set_state(&mut self, state: &[f64]) -> Result<(), EnvError> {
        self.state = state_array(self.id(), state)?.map(|s| s as f32);
        Ok(())
    }

    fn observe(&self, obs: &mut [f32]) {
        write_obs(obs, self.state.map(f64::from));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn step_from(state: [f64; 2], action: f32) -> (Vec<f64>, Transition) {
        let mut env = ContinuousMountainCar::default();
        env.set_state(&state).unwrap();
        let t = env.step(&[action], &mut [0.0; 2]);
        (env.state(), t)
    }

    #[test]
    fn penalty_uses_the_raw_action_and_force_the_clipped_one() {
        let (clipped, t) = step_from([-0.5, 0.0], 1.5);
        assert!((t.reward - -0.225).abs() < 1e-12, "{}", t.reward);
        assert!(!t.terminated);
        let (full, _) = step_from([-0.5, 0.0], 1.0);
        assert_eq!(clipped, full);
    }

    #[test]
    fn state_is_float32() {
        let (s, _) = step_from([-0.5, 0.01], 0.3);
        assert!(s.iter().all(|&x| f64::from(x as f32) == x), "{s:?}");
        let mut env = ContinuousMountainCar::default();
        env.set_state(&[0.1, 0.2]).unwrap();
        assert_eq!(env.state(), [f64::from(0.1_f32), f64::from(0.2_f32)]);
    }

    #[test]
    fn goal_pays_one_hundred_minus_penalty() {
        let (s, t) = step_from([0.44, 0.07], 1.0);
        assert!(s[0] >= 0.45);
        assert!(t.terminated);
        assert!((t.reward - 99.9).abs() < 1e-12, "{}", t.reward);
    }

    #[test]
    fn left_wall_stops_the_car() {
        let (s, _) = step_from([-1.2, -0.05], -1.0);
        assert_eq!(s, [f64::from(-1.2_f32), 0.0]);
    }

    #[test]
    fn malformed_action_gives_nan_state() {
        let mut env = ContinuousMountainCar::default();
        let mut obs = [0.0; 2];
        env.step(&[0.5, 0.5], &mut obs);
        assert!(obs[1].is_nan());
    }
}
