//! Acrobot-v1 (gymnasium `envs/classic_control/acrobot.py`): swing a two-link chain up by torquing the middle joint.

use std::f64::consts::PI;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::helpers::{clip, discrete_value, state_array, symmetric_box, write_obs};
use super::{Dynamics, Env, EnvError, Space, Transition};

/// Integration step in seconds.
const DT: f64 = 0.2;
const LINK_LENGTH_1: f64 = 1.0;
const LINK_MASS_1: f64 = 1.0;
const LINK_MASS_2: f64 = 1.0;
/// Position of the centre of mass of link 1.
const LINK_COM_POS_1: f64 = 0.5;
/// Position of the centre of mass of link 2.
const LINK_COM_POS_2: f64 = 0.5;
/// Moment of inertia of both links.
const LINK_MOI: f64 = 1.0;
const GRAVITY: f64 = 9.8;
const MAX_VEL_1: f64 = 4.0 * PI;
const MAX_VEL_2: f64 = 9.0 * PI;
/// The torque each discrete action applies.
const AVAIL_TORQUE: [f64; 3] = [-1.0, 0.0, 1.0];
/// Beyond this magnitude [`wrap`] reduces an angle with `rem_euclid` instead of gymnasium's loop.
const WRAP_LOOP_LIMIT: f64 = 1e4;

/// Acrobot-v1: state `[theta1, theta2, dtheta1, dtheta2]` (`theta2` relative to link 1, `0` hanging down),
/// actions `0, 1, 2` for torques `-1, 0, +1`, reward `-1` per step and `0` on the terminal step.
///
/// One RK4 step of the "book" dynamics per step; angles are wrapped into `[-pi, pi]` and velocities clipped.
/// An action outside `Discrete(3)` makes the state NaN.
#[derive(Debug, Clone, Default)]
pub struct Acrobot {
    state: [f64; 4],
}

impl Env for Acrobot {
    fn id(&self) -> &'static str {
        "Acrobot-v1"
    }

    fn observation_space(&self) -> Space {
        symmetric_box(&[1.0, 1.0, 1.0, 1.0, MAX_VEL_1 as f32, MAX_VEL_2 as f32])
    }

    fn action_space(&self) -> Space {
        Space::Discrete { n: AVAIL_TORQUE.len() }
    }

    /// Draws the state from U(-0.1, 0.1) and, as gymnasium does, rounds it to float32.
    fn reset(&mut self, rng: &mut ChaCha8Rng, obs: &mut [f32]) {
        self.state = std::array::from_fn(|_| f64::from(rng.random_range(-0.1_f64..0.1) as f32));
        self.observe(obs);
    }

    fn step(&mut self, action: &[f32], obs: &mut [f32]) -> Transition {
        let torque = discrete_value(action, &AVAIL_TORQUE);
        let [theta1, theta2, dtheta1, dtheta2] = self.state;
        let ns = rk4([theta1, theta2, dtheta1, dtheta2, torque]);
        self.state = [
            wrap(ns[0], -PI, PI),
            wrap(ns[1], -PI, PI),
            clip(ns[2], -MAX_VEL_1, MAX_VEL_1),
            clip(ns[3], -MAX_VEL_2, MAX_VEL_2),
        ];
        self.observe(obs);

        let [theta1, theta2, ..] = self.state;
        let terminated = -theta1.cos() - (theta2 + theta1).cos() > 1.0;
        Transition { reward: if terminated { 0.0 } else { -1.0 }, terminated, truncated: false }
    }
}

impl Dynamics for Acrobot {
    fn state(&self) -> Vec<f64> {
        self.state.to_vec()
    }

    fn set_state(&mut self, state: &[f64]) -> Result<(), EnvError> {
        self.state = state_array(self.id(), state)?;
        Ok(())
    }

    fn observe(&self, obs: &mut [f32]) {
        let [theta1, theta2, dtheta1, dtheta2] = self.state;
        write_obs(obs, [theta1.cos(), theta1.sin(), theta2.cos(), theta2.sin(), dtheta1, dtheta2]);
    }
}

/// gymnasium's `_dsdt` ("book" variant): time derivative of `[theta1, theta2, dtheta1, dtheta2, torque]`.
fn dsdt(s: [f64; 5]) -> [f64; 5] {
    let (m1, m2, l1) = (LINK_MASS_1, LINK_MASS_2, LINK_LENGTH_1);
    let (lc1, lc2, i1, i2, g) = (LINK_COM_POS_1, LINK_COM_POS_2, LINK_MOI, LINK_MOI, GRAVITY);
    let [theta1, theta2, dtheta1, dtheta2, a] = s;
    let d1 = m1 * lc1.powi(2) + m2 * (l1.powi(2) + lc2.powi(2) + 2.0 * l1 * lc2 * theta2.cos()) + i1 + i2;
    let d2 = m2 * (lc2.powi(2) + l1 * lc2 * theta2.cos()) + i2;
    let phi2 = m2 * lc2 * g * (theta1 + theta2 - PI / 2.0).cos();
    let phi1 = -m2 * l1 * lc2 * dtheta2.powi(2) * theta2.sin() - 2.0 * m2 * l1 * lc2 * dtheta2 * dtheta1 * theta2.sin()
        + (m1 * lc1 + m2 * l1) * g * (theta1 - PI / 2.0).cos()
        + phi2;
    let ddtheta2 = (a + d2 / d1 * phi1 - m2 * l1 * lc2 * dtheta1.powi(2) * theta2.sin() - phi2)
        / (m2 * lc2.powi(2) + i2 - d2.powi(2) / d1);
    let ddtheta1 = -(d2 * ddtheta2 + phi1) / d1;
    [dtheta1, dtheta2, ddtheta1, ddtheta2, 0.0]
}

/// gymnasium's `rk4` over `t = [0, DT]`: one classical Runge-Kutta step of [`dsdt`].
fn rk4(y0: [f64; 5]) -> [f64; 5] {
    let (dt, dt2) = (DT, DT / 2.0);
    let shifted = |h: f64, k: [f64; 5]| std::array::from_fn(|i| y0[i] + h * k[i]);
    let k1 = dsdt(y0);
    let k2 = dsdt(shifted(dt2, k1));
    let k3 = dsdt(shifted(dt2, k2));
    let k4 = dsdt(shifted(dt, k3));
    std::array::from_fn(|i| y0[i] + dt / 6.0 * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i]))
}

/// gymnasium's `wrap`: adds or subtracts the period `hi - lo` until `x` lies in `[lo, hi]`.
///
/// Where gymnasium's loop would take very long or never end (`|x| > WRAP_LOOP_LIMIT`, infinities) this uses
/// `rem_euclid` instead; non-finite values come out NaN.
fn wrap(mut x: f64, lo: f64, hi: f64) -> f64 {
    let diff = hi - lo;
    if x.is_nan() || x.abs() > WRAP_LOOP_LIMIT {
        return lo + (x - lo).rem_euclid(diff);
    }
    while x > hi {
        x -= diff;
    }
    while x < lo {
        x += diff;
    }
    x
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn assert_close(got: f64, want: f64) {
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    }

    #[test]
    fn derivatives_of_horizontal_first_link_match_hand_computation() {
        // theta1 = pi/2, theta2 = 0, at rest, no torque: d1 = 4.5, d2 = 1.75, phi2 = 4.9, phi1 = 19.6,
        // ddtheta2 = (7/18 * 19.6 - 4.9) / (1.25 - 1.75^2 / 4.5) = 196/41, ddtheta1 = -(1.75 * 196/41 + 19.6) / 4.5.
        let d = dsdt([PI / 2.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(d[..2], [0.0, 0.0]);
        assert_close(d[3], 196.0 / 41.0);
        assert_close(d[2], -254.8 / 41.0);
        assert_eq!(d[4], 0.0);
    }

    #[test]
    fn hanging_at_rest_stays_at_rest() {
        let mut env = Acrobot::default();
        let t = env.step(&[1.0], &mut [0.0; 6]);
        assert!(env.state().iter().all(|s| s.abs() < 1e-12), "{:?}", env.state());
        assert_eq!(t, Transition { reward: -1.0, terminated: false, truncated: false });
    }

    #[test]
    fn upright_is_terminal_with_zero_reward() {
        let mut env = Acrobot::default();
        env.set_state(&[PI, 0.0, 0.0, 0.0]).unwrap();
        let t = env.step(&[1.0], &mut [0.0; 6]);
        assert_eq!((t.reward, t.terminated), (0.0, true));
    }

    #[test]
    fn velocities_are_clipped_and_angles_wrapped() {
        let mut env = Acrobot::default();
        env.set_state(&[3.0, -3.0, MAX_VEL_1, -MAX_VEL_2]).unwrap();
        env.step(&[2.0], &mut [0.0; 6]);
        let s = env.state();
        assert!(s[..2].iter().all(|a| (-PI..=PI).contains(a)), "{s:?}");
        assert!(s[2].abs() <= MAX_VEL_1 && s[3].abs() <= MAX_VEL_2, "{s:?}");
    }

    #[test]
    fn wrap_shifts_by_whole_periods() {
        assert_close(wrap(3.5, -PI, PI), 3.5 - 2.0 * PI);
        assert_close(wrap(-10.0, -PI, PI), -10.0 + 4.0 * PI);
        assert_eq!(wrap(PI, -PI, PI), PI);
        let far = wrap(1e5 + 1.0, -PI, PI);
        assert!((far - wrap((1e5 + 1.0) % (2.0 * PI), -PI, PI)).abs() < 1e-9, "{far}");
        assert!(wrap(f64::INFINITY, -PI, PI).is_nan());
    }

    #[test]
    fn reset_state_is_float32() {
        use rand::SeedableRng;
        let mut env = Acrobot::default();
        env.reset(&mut ChaCha8Rng::seed_from_u64(3), &mut [0.0; 6]);
        assert!(env.state().iter().all(|&s| s.abs() < 0.1 && f64::from(s as f32) == s));
    }

    #[test]
    fn invalid_action_gives_nan_state() {
        let mut env = Acrobot::default();
        env.step(&[3.0], &mut [0.0; 6]);
        assert!(env.state()[2].is_nan());
    }
}
