//! CartPoleNoVelocity-v1 (proxima's own): CartPole-v1 observed through position and angle only, the standard
//! partially observable CartPole benchmark for recurrent (memory) policies.

use rand_chacha::ChaCha8Rng;

use super::cartpole::OBS_HIGH;
use super::helpers::symmetric_box;
use super::{CartPole, Dynamics, Env, EnvError, Space, Transition};

/// The components of CartPole's observation that are kept: `x` and `theta` (not `x_dot` and `theta_dot`).
const KEPT: [usize; 2] = [0, 2];

/// `proxima/CartPoleNoVelocity-v1`: [`CartPole`] itself (same dynamics, reset draws, rewards and termination,
/// registered with the same 500-step limit and reward threshold 475) with the observation `[x, theta]`: the
/// velocities must be inferred from consecutive observations, so a memoryless policy sees a partially observable
/// task.
///
/// The observation space is CartPole's `Box` restricted to those two components (`±4.8`, `±0.419`). The state
/// ([`Dynamics::state`], [`Dynamics::set_state`]) is CartPole's full `[x, x_dot, theta, theta_dot]`.
#[derive(Debug, Clone, Default)]
pub struct CartPoleNoVelocity {
    cartpole: CartPole,
}

impl CartPoleNoVelocity {
    /// Runs `f` with a buffer for CartPole's full observation and writes the kept components into `obs`.
    fn project(obs: &mut [f32], f: impl FnOnce(&mut [f32; 4])) {
        let mut full = [0.0; 4];
        f(&mut full);
        for (o, i) in obs.iter_mut().zip(KEPT) {
            *o = full[i];
        }
    }
}

impl Env for CartPoleNoVelocity {
    fn id(&self) -> &'static str {
        "proxima/CartPoleNoVelocity-v1"
    }

    fn observation_space(&self) -> Space {
        symmetric_box(&KEPT.map(|i| OBS_HIGH[i]))
    }

    fn action_space(&self) -> Space {
        self.cartpole.action_space()
    }

    fn reset(&mut self, rng: &mut ChaCha8Rng, obs: &mut [f32]) {
        Self::project(obs, |full| self.cartpole.reset(rng, full));
    }

    fn step(&mut self, action: &[f32], obs: &mut [f32]) -> Transition {
        let mut t = Transition { reward: 0.0, terminated: false, truncated: false };
        Self::project(obs, |full| t = self.cartpole.step(action, full));
        t
    }
}

impl Dynamics for CartPoleNoVelocity {
    fn state(&self) -> Vec<f64> {
        self.cartpole.state()
    }

    fn set_state(&mut self, state: &[f64]) -> Result<(), EnvError> {
        self.cartpole.set_state(state)
    }

    fn observe(&self, obs: &mut [f32]) {
        Self::project(obs, |full| self.cartpole.observe(full));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::env::{make, spec};

    const ID: &str = "proxima/CartPoleNoVelocity-v1";

    #[test]
    fn registered_as_cartpole_with_another_id() {
        let (ours, theirs) = (spec(ID).unwrap(), spec("CartPole-v1").unwrap());
        assert_eq!((ours.max_episode_steps, ours.reward_threshold), (500, Some(475.0)));
        assert_eq!(
            (ours.max_episode_steps, ours.reward_threshold),
            (theirs.max_episode_steps, theirs.reward_threshold)
        );
        let (env, cartpole) = (make(ID).unwrap(), make("CartPole-v1").unwrap());
        assert_eq!(env.action_space(), cartpole.action_space());
        let Space::Box { low, high, .. } = cartpole.observation_space() else { panic!("CartPole: not a box") };
        let kept = |b: &[f32]| KEPT.map(|i| b[i]).to_vec();
        assert_eq!(env.observation_space(), Space::vector(kept(&low), kept(&high)));
        assert_eq!(env.observation_space().flat_dim(), 2);
    }

    /// Same seeds and actions: the observations are CartPole-v1's `[x, theta]`, and rewards, terminations and
    /// truncations are CartPole-v1's. The actions come from a balancing controller on CartPole's full observation
    /// with random pushes mixed in, so episodes end both by termination and by the time limit.
    #[test]
    fn observes_components_0_and_2_of_cartpole() {
        let (mut env, mut cartpole) = (make(ID).unwrap(), make("CartPole-v1").unwrap());
        let (mut obs, mut full) = ([f32::NAN; 2], [f32::NAN; 4]);
        let mut actions = ChaCha8Rng::seed_from_u64(3);
        let (mut terminated, mut truncated) = (0, 0);
        for episode in 0..12 {
            // Seeded, unseeded (continuing the stream) and reseeded resets.
            let seed = [Some(5), None, None, Some(5), Some(6), None][episode % 6];
            env.reset(seed, &mut obs);
            cartpole.reset(seed, &mut full);
            assert_eq!(obs, [full[0], full[2]], "episode {episode} reset");
            let noise = if episode % 2 == 0 { 0.02 } else { 0.5 };
            for step in 0.. {
                let balance = 0.1 * full[0] + 0.5 * full[1] + 10.0 * full[2] + 2.0 * full[3] > 0.0;
                let push_right = if actions.random_bool(noise) { actions.random_bool(0.5) } else { balance };
                let action = [f32::from(u8::from(push_right))];
                let t = env.step(&action, &mut obs);
                assert_eq!(t, cartpole.step(&action, &mut full), "episode {episode} step {step}");
                assert_eq!(obs, [full[0], full[2]], "episode {episode} step {step}");
                let mut observed = [f32::NAN; 2];
                env.unwrapped().observe(&mut observed);
                assert_eq!(observed, obs);
                assert_eq!(env.unwrapped().state(), cartpole.unwrapped().state());
                if t.terminated || t.truncated {
                    terminated += usize::from(t.terminated);
                    truncated += usize::from(t.truncated);
                    break;
                }
            }
        }
        assert!(terminated >= 3 && truncated >= 3, "{terminated} terminated, {truncated} truncated");
    }

    #[test]
    fn state_is_cartpoles() {
        let mut env = CartPoleNoVelocity::default();
        env.set_state(&[0.1, -0.2, 0.03, 0.4]).unwrap();
        assert_eq!(env.state(), [0.1, -0.2, 0.03, 0.4]);
        let mut obs = [f32::NAN; 2];
        env.observe(&mut obs);
        assert_eq!(obs, [0.1, 0.03]);
        assert!(env.set_state(&[0.0; 2]).is_err());
    }
}
