//! CartPole-v1 (gymnasium `envs/classic_control/cartpole.py`): balance a pole on a cart pushed left or right.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::helpers::{discrete_value, state_array, symmetric_box, write_obs};
use super::{Dynamics, Env, EnvError, Space, Transition};

const GRAVITY: f64 = 9.8;
const MASS_CART: f64 = 1.0;
const MASS_POLE: f64 = 0.1;
const TOTAL_MASS: f64 = MASS_POLE + MASS_CART;
/// Half the pole's length.
const LENGTH: f64 = 0.5;
const POLEMASS_LENGTH: f64 = MASS_POLE * LENGTH;
const FORCE_MAG: f64 = 10.0;
/// Seconds between state updates.
const TAU: f64 = 0.02;
const THETA_THRESHOLD: f64 = 12.0 * 2.0 * std::f64::consts::PI / 360.0;
const X_THRESHOLD: f64 = 2.4;
/// The force each discrete action applies.
const FORCES: [f64; 2] = [-FORCE_MAG, FORCE_MAG];
/// The observation space's upper bounds (the lower ones are their negatives): twice the termination thresholds for
/// the positions, none for the velocities.
pub(super) const OBS_HIGH: [f32; 4] =
    [(X_THRESHOLD * 2.0) as f32, f32::INFINITY, (THETA_THRESHOLD * 2.0) as f32, f32::INFINITY];

/// CartPole-v1: state `[x, x_dot, theta, theta_dot]`, actions `0` (push left) and `1` (push right), reward `+1`
/// per step including the terminating one, explicit Euler integration.
///
/// As in gymnasium, stepping again after a terminal step gives reward `0.0`; [`Env::reset`] and
/// [`Dynamics::set_state`] start a fresh episode. An action outside `Discrete(2)` makes the state NaN.
#[derive(Debug, Clone, Default)]
pub struct CartPole {
    state: [f64; 4],
    /// A terminal state was reached since the episode started (gymnasium's `steps_beyond_terminated`).
    terminated_before: bool,
}

impl Env for CartPole {
    fn id(&self) -> &'static str {
        "CartPole-v1"
    }

    fn observation_space(&self) -> Space {
        symmetric_box(&OBS_HIGH)
    }

    fn action_space(&self) -> Space {
        Space::Discrete { n: FORCES.len() }
    }

    fn reset(&mut self, rng: &mut ChaCha8Rng, obs: &mut [f32]) {
        self.state = std::array::from_fn(|_| rng.random_range(-0.05..0.05));
        self.terminated_before = false;
        self.observe(obs);
    }

    fn step(&mut self, action: &[f32], obs: &mut [f32]) -> Transition {
        let force = discrete_value(action, &FORCES);
        let [x, x_dot, theta, theta_dot] = self.state;
        let (sintheta, costheta) = theta.sin_cos();
        let temp = (force + POLEMASS_LENGTH * (theta_dot * theta_dot) * sintheta) / TOTAL_MASS;
        let thetaacc = (GRAVITY * sintheta - costheta * temp)
            / (LENGTH * (4.0 / 3.0 - MASS_POLE * (costheta * costheta) / TOTAL_MASS));
        let xacc = temp - POLEMASS_LENGTH * thetaacc * costheta / TOTAL_MASS;
        let (x, theta) = (x + TAU * x_dot, theta + TAU * theta_dot);
        self.state = [x, x_dot + TAU * xacc, theta, theta_dot + TAU * thetaacc];
        self.observe(obs);

        // gymnasium's `x < -x_threshold or x > x_threshold or ...`: symmetric thresholds, NaN compares false.
        let terminated = x.abs() > X_THRESHOLD || theta.abs() > THETA_THRESHOLD;
        let reward = if terminated && self.terminated_before { 0.0 } else { 1.0 };
        self.terminated_before |= terminated;
        Transition { reward, terminated, truncated: false }
    }
}

impl Dynamics for CartPole {
    fn state(&self) -> Vec<f64> {
        self.state.to_vec()
    }

    fn set_state(&mut self, state: &[f64]) -> Result<(), EnvError> {
        self.state = state_array(self.id(), state)?;
        self.terminated_before = false;
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

    fn step_from(state: [f64; 4], action: f32) -> (CartPole, Transition) {
        let mut env = CartPole::default();
        env.set_state(&state).unwrap();
        let t = env.step(&[action], &mut [0.0; 4]);
        (env, t)
    }

    #[test]
    fn push_right_from_rest_matches_hand_computation() {
        // temp = 100/11, thetaacc = -(100/11) / (0.5 (4/3 - 1/11)) = -600/41, xacc = 100/11 + 0.05 * 600/41 / 1.1
        // = 4400/451; Euler moves the positions with the old (zero) velocities.
        let (env, t) = step_from([0.0; 4], 1.0);
        let expected = [0.0, 0.02 * 4400.0 / 451.0, 0.0, -0.02 * 600.0 / 41.0];
        for (got, want) in env.state().iter().zip(expected) {
            assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        }
        assert_eq!(t, Transition { reward: 1.0, terminated: false, truncated: false });
    }

    #[test]
    fn push_left_mirrors_push_right() {
        let (left, _) = step_from([0.0; 4], 0.0);
        let (right, _) = step_from([0.0; 4], 1.0);
        for (l, r) in left.state().iter().zip(right.state()) {
            assert_eq!(*l, -r);
        }
    }

    #[test]
    fn termination_thresholds_are_strict() {
        // Zero velocities keep x and theta exactly on the thresholds: not terminated.
        for state in [[2.4, 0.0, 0.0, 0.0], [-2.4, 0.0, 0.0, 0.0], [0.0, 0.0, THETA_THRESHOLD, 0.0]] {
            assert!(!step_from(state, 1.0).1.terminated, "{state:?}");
        }
        assert!(step_from([2.4, 1e-3, 0.0, 0.0], 1.0).1.terminated);
        assert!(step_from([0.0, 0.0, -THETA_THRESHOLD, -1e-3], 1.0).1.terminated);
    }

    #[test]
    fn stepping_after_termination_gives_zero_reward() {
        let (mut env, t) = step_from([2.4, 1.0, 0.0, 0.0], 1.0);
        assert_eq!((t.reward, t.terminated), (1.0, true));
        let t = env.step(&[1.0], &mut [0.0; 4]);
        assert_eq!((t.reward, t.terminated), (0.0, true));
    }

    #[test]
    fn invalid_action_gives_nan_state() {
        for action in [&[2.0][..], &[0.5], &[], &[0.0, 1.0]] {
            let mut env = CartPole::default();
            let mut obs = [0.0; 4];
            env.step(action, &mut obs);
            assert!(obs[1].is_nan(), "{action:?}");
        }
    }

    #[test]
    fn reset_draws_small_state() {
        use rand::SeedableRng;
        let mut env = CartPole::default();
        let mut obs = [1.0; 4];
        env.reset(&mut ChaCha8Rng::seed_from_u64(7), &mut obs);
        assert!(obs.iter().all(|o| o.abs() < 0.05));
        assert_eq!(env.state().iter().map(|&s| s as f32).collect::<Vec<_>>(), obs);
    }
}
