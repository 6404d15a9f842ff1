//! Pendulum-v1 (gymnasium `envs/classic_control/pendulum.py`): swing a torque-limited pendulum up and hold it.

use std::f64::consts::PI;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::helpers::{clip, scalar_action, state_array, symmetric_box, write_obs};
use super::{Dynamics, Env, EnvError, Space, Transition};

const MAX_SPEED: f64 = 8.0;
const MAX_TORQUE: f32 = 2.0;
const DT: f64 = 0.05;
const G: f64 = 10.0;
const M: f64 = 1.0;
const L: f64 = 1.0;

/// Pendulum-v1: state `[theta, theta_dot]` (`theta = 0` upright, not wrapped), action `Box(-2, 2, (1,))` torque
/// (clipped), reward `-(angle_normalize(theta)^2 + 0.1 theta_dot^2 + 0.001 u^2)` on the pre-step state, never
/// terminates. Semi-implicit Euler: the angle moves with the new velocity.
///
/// The torque is float32 as in gymnasium (`np.clip` of the float32 action), so `0.001 u^2` and `3 u` are float32
/// products. numpy evaluates the scalar `u**2` with the C library's `powf`, which can be one float32 ulp off the
/// exact square used here (reward differences up to ~3e-11). An action that does not hold exactly one value makes
/// the state NaN.
#[derive(Debug, Clone, Default)]
pub struct Pendulum {
    state: [f64; 2],
}

impl Env for Pendulum {
    fn id(&self) -> &'static str {
        "Pendulum-v1"
    }

    fn observation_space(&self) -> Space {
        symmetric_box(&[1.0, 1.0, MAX_SPEED as f32])
    }

    fn action_space(&self) -> Space {
        symmetric_box(&[MAX_TORQUE])
    }

    fn reset(&mut self, rng: &mut ChaCha8Rng, obs: &mut [f32]) {
        self.state = [rng.random_range(-PI..PI), rng.random_range(-1.0..1.0)];
        self.observe(obs);
    }

    fn step(&mut self, action: &[f32], obs: &mut [f32]) -> Transition {
        let [th, thdot] = self.state;
        let u = clip(scalar_action(action), -MAX_TORQUE, MAX_TORQUE);
        let costs = angle_normalize(th).powi(2) + 0.1 * thdot.powi(2) + f64::from(0.001 * u.powi(2));
        let accel = 3.0 * G / (2.0 * L) * th.sin() + f64::from((3.0 / (M * L.powi(2))) as f32 * u);
        let newthdot = clip(thdot + accel * DT, -MAX_SPEED, MAX_SPEED);
        self.state = [th + newthdot * DT, newthdot];
        self.observe(obs);
        Transition { reward: -costs, terminated: false, truncated: false }
    }
}

impl Dynamics for Pendulum {
    fn state(&self) -> Vec<f64> {
        self.state.to_vec()
    }

    fn set_state(&mut self, state: &[f64]) -> Result<(), EnvError> {
        self.state = state_array(self.id(), state)?;
        Ok(())
    }

    fn observe(&self, obs: &mut [f32]) {
        let [th, thdot] = self.state;
        write_obs(obs, [th.cos(), th.sin(), thdot]);
    }
}

/// gymnasium's `angle_normalize`: `((x + pi) % (2 pi)) - pi` with numpy's floored modulo, into `[-pi, pi)`.
fn angle_normalize(x: f64) -> f64 {
    (x + PI).rem_euclid(2.0 * PI) - PI
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn step_from(state: [f64; 2], action: f32) -> (Vec<f64>, Transition) {
        let mut env = Pendulum::default();
        env.set_state(&state).unwrap();
        let t = env.step(&[action], &mut [0.0; 3]);
        (env.state(), t)
    }

    #[test]
    fn full_torque_from_upright_rest() {
        // cost = 0.001 * 2^2 (float32), theta_dot' = 3 * 2 * 0.05 = 0.3, theta' = 0.3 * 0.05.
        let (s, t) = step_from([0.0, 0.0], 2.0);
        assert!((s[1] - 0.3).abs() < 1e-15 && (s[0] - 0.015).abs() < 1e-15, "{s:?}");
        assert_eq!(t.reward, -f64::from(0.001_f32 * 4.0));
        assert!(!t.terminated && !t.truncated);
    }

    #[test]
    fn torque_is_clipped_and_speed_limited() {
        assert_eq!(step_from([0.3, 1.0], 5.0), step_from([0.3, 1.0], 2.0));
        let (s, _) = step_from([PI / 2.0, 8.0], 2.0);
        assert_eq!(s[1], 8.0);
    }

    #[test]
    fn angle_normalize_wraps_into_half_open_range() {
        assert!((angle_normalize(1.5 * PI) + 0.5 * PI).abs() < 1e-15);
        assert!((angle_normalize(-1.5 * PI) - 0.5 * PI).abs() < 1e-15);
        assert_eq!(angle_normalize(PI), -PI);
        assert_eq!(angle_normalize(0.25), 0.25);
    }

    #[test]
    fn cost_uses_the_state_before_the_step() {
        // Hanging down at rest: the full angle cost pi^2 is charged even though the step moves the pendulum.
        let (_, t) = step_from([PI, 0.0], 0.0);
        assert!((t.reward + PI * PI).abs() < 1e-12, "{}", t.reward);
    }

    #[test]
    fn rewards_stay_within_gymnasium_bounds() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for _ in 0..10_000 {
            let state = [rng.random_range(-10.0..10.0), rng.random_range(-8.0..=8.0)];
            let (_, t) = step_from(state, rng.random_range(-3.0..3.0));
            assert!((-16.273_604_5..=0.0).contains(&t.reward), "{state:?}: {}", t.reward);
        }
    }

    #[test]
    fn reset_covers_gymnasium_ranges() {
        let mut env = Pendulum::default();
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for _ in 0..100 {
            env.reset(&mut rng, &mut [0.0; 3]);
            let [th, thdot] = env.state().try_into().unwrap();
            assert!((-PI..PI).contains(&th) && (-1.0..1.0).contains(&thdot));
        }
    }
}
