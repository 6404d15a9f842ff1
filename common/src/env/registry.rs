//! Environments by gymnasium id, with the step limits and reward thresholds gymnasium (or, for MinAtar, the
//! `minatar` package's `register_envs`) registers for them; proxima's own `proxima/*` envs are registered here in
//! the same way.

use super::minatar::{Asterix, Breakout, Freeway, MinAtar, Seaquest, SpaceInvaders};
use super::{
    Acrobot, CartPole, CartPoleNoVelocity, ContinuousMountainCar, Dynamics, EnvError, MountainCar, NO_TIME_LIMIT,
    Pendulum, Recall, TimeLimit,
};

/// What gymnasium's `register` says about an environment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EnvSpec {
    /// Gymnasium id, e.g. `"CartPole-v1"`.
    pub id: &'static str,
    /// Steps after which [`TimeLimit`] truncates an episode; [`NO_TIME_LIMIT`] where none is registered.
    pub max_episode_steps: u32,
    /// Average return at which the task counts as solved, where gymnasium defines one.
    pub reward_threshold: Option<f64>,
}

/// One registered environment: its spec and how to build its dynamics.
struct Entry {
    spec: EnvSpec,
    build: fn() -> Box<dyn Dynamics>,
}

const REGISTRY: [Entry; 12] = [
    Entry {
        spec: EnvSpec { id: "CartPole-v1", max_episode_steps: 500, reward_threshold: Some(475.0) },
        build: || Box::new(CartPole::default()),
    },
    Entry {
        spec: EnvSpec { id: "Acrobot-v1", max_episode_steps: 500, reward_threshold: Some(-100.0) },
        build: || Box::new(Acrobot::default()),
    },
    Entry {
        spec: EnvSpec { id: "MountainCar-v0", max_episode_steps: 200, reward_threshold: Some(-110.0) },
        build: || Box::new(MountainCar::default()),
    },
    Entry {
        spec: EnvSpec { id: "MountainCarContinuous-v0", max_episode_steps: 999, reward_threshold: Some(90.0) },
        build: || Box::new(ContinuousMountainCar::default()),
    },
    Entry {
        spec: EnvSpec { id: "Pendulum-v1", max_episode_steps: 200, reward_threshold: None },
        build: || Box::new(Pendulum::default()),
    },
    // minatar.gym registers the games without max_episode_steps (Freeway ends itself after 2500 frames).
    Entry {
        spec: EnvSpec { id: "MinAtar/Breakout-v1", max_episode_steps: NO_TIME_LIMIT, reward_threshold: None },
        build: || Box::new(MinAtar::<Breakout>::default()),
    },
    Entry {
        spec: EnvSpec { id: "MinAtar/Asterix-v1", max_episode_steps: NO_TIME_LIMIT, reward_threshold: None },
        build: || Box::new(MinAtar::<Asterix>::default()),
    },
    Entry {
        spec: EnvSpec { id: "MinAtar/Freeway-v1", max_episode_steps: NO_TIME_LIMIT, reward_threshold: None },
        build: || Box::new(MinAtar::<Freeway>::default()),
    },
    Entry {
        spec: EnvSpec { id: "MinAtar/SpaceInvaders-v1", max_episode_steps: NO_TIME_LIMIT, reward_threshold: None },
        build: || Box::new(MinAtar::<SpaceInvaders>::default()),
    },
    Entry {
        spec: EnvSpec { id: "MinAtar/Seaquest-v1", max_episode_steps: NO_TIME_LIMIT, reward_threshold: None },
        build: || Box::new(MinAtar::<Seaquest>::default()),
    },
    // proxima's memory tasks. CartPoleNoVelocity is CartPole-v1 observed through [x, theta]: CartPole's limit and
    // threshold. Recall ends itself after 10 steps, so no limit (a limit of 10 would also mark its terminating step
    // truncated); its threshold is 95% of the optimum 1.0, as CartPole's 475 is of 500 (memoryless policies: 0.25).
    Entry {
        spec: EnvSpec { id: "proxima/CartPoleNoVelocity-v1", max_episode_steps: 500, reward_threshold: Some(475.0) },
        build: || Box::new(CartPoleNoVelocity::default()),
    },
    Entry {
        spec: EnvSpec { id: "proxima/Recall-v0", max_episode_steps: NO_TIME_LIMIT, reward_threshold: Some(0.95) },
        build: || Box::new(Recall::default()),
    },
];

/// The ids of all registered environments.
pub const ENV_IDS: [&str; REGISTRY.len()] = {
    let mut ids = [""; REGISTRY.len()];
    let mut i = 0;
    while i < ids.len() {
        ids[i] = REGISTRY[i].spec.id;
        i += 1;
    }
    ids
};

fn entry(id: &str) -> Result<&'static Entry, EnvError> {
    let registry: &'static [Entry] = &REGISTRY;
    registry
        .iter()
        .find(|e| e.spec.id == id)
        .ok_or_else(|| EnvError::UnknownId { id: id.to_owned(), known: ENV_IDS.join(", ") })
}

/// The registered spec of `id`, or [`EnvError::UnknownId`].
pub fn spec(id: &str) -> Result<EnvSpec, EnvError> {
    entry(id).map(|e| e.spec)
}

/// The raw dynamics of `id` without a time limit (gymnasium's `make(id).unwrapped`).
pub fn make_dynamics(id: &str) -> Result<Box<dyn Dynamics>, EnvError> {
    entry(id).map(|e| (e.build)())
}

/// `id` with its registered time limit, as gymnasium's `make` returns it. Call [`TimeLimit::reset`] before
/// stepping.
pub fn make(id: &str) -> Result<TimeLimit, EnvError> {
    let entry = entry(id)?;
    Ok(TimeLimit::new((entry.build)(), entry.spec.max_episode_steps))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::env::Space;

    #[test]
    fn unknown_id_lists_the_known_ones() {
        let msg = make("CartPole-v9").err().map(|e| e.to_string()).unwrap();
        assert_eq!(
            msg,
            "unknown env id \"CartPole-v9\"; known ids: CartPole-v1, Acrobot-v1, MountainCar-v0, \
             MountainCarContinuous-v0, Pendulum-v1, MinAtar/Breakout-v1, MinAtar/Asterix-v1, \
             MinAtar/Freeway-v1, MinAtar/SpaceInvaders-v1, MinAtar/Seaquest-v1, proxima/CartPoleNoVelocity-v1, \
             proxima/Recall-v0"
        );
        assert!(spec("").is_err() && make_dynamics("pendulum-v1").is_err());
    }

    #[test]
    fn registry_ids_match_the_dynamics() {
        for id in ENV_IDS {
            assert_eq!(make_dynamics(id).unwrap().id(), id);
            assert_eq!(spec(id).unwrap().id, id);
            assert_eq!(make(id).unwrap().max_episode_steps(), spec(id).unwrap().max_episode_steps);
        }
        assert_eq!(spec("MountainCarContinuous-v0").unwrap().max_episode_steps, 999);
        assert_eq!(spec("Pendulum-v1").unwrap().reward_threshold, None);
    }

    #[test]
    fn reset_observations_lie_in_the_observation_space() {
        for id in ENV_IDS {
            let mut env = make(id).unwrap();
            let mut obs = vec![f32::NAN; env.observation_space().flat_dim()];
            for seed in 0..20 {
                env.reset(Some(seed), &mut obs);
                let Space::Box { low, high, .. } = env.observation_space() else { panic!("{id}: not a box") };
                let inside = obs.iter().zip(low.iter().zip(&high)).all(|(o, (l, h))| l <= o && o <= h);
                assert!(inside, "{id}: {obs:?}");
            }
        }
    }

    #[test]
    fn time_limit_truncates_on_exactly_the_last_step() {
        let mut env = make("Pendulum-v1").unwrap();
        let mut obs = [0.0; 3];
        env.reset(Some(0), &mut obs);
        for step in 1..=200 {
            let t = env.step(&[0.0], &mut obs);
            assert!(!t.terminated);
            assert_eq!(t.truncated, step == 200, "step {step}");
        }
        env.reset(None, &mut obs);
        assert!(!env.step(&[0.0], &mut obs).truncated, "reset restarts the count");
    }

    /// The observations of a reset with `seed` and of up to 100 steps of cycled actions after it.
    fn trajectory(env: &mut TimeLimit, seed: Option<u64>) -> Vec<f32> {
        let dim = env.observation_space().flat_dim();
        let mut obs = vec![0.0; dim];
        env.reset(seed, &mut obs);
        let mut seen = obs.clone();
        for i in 0..100 {
            let action = match env.action_space() {
                Space::Discrete { n } => vec![(i % n) as f32],
                Space::Box { low, .. } => low,
                Space::MultiDiscrete { nvec } => vec![0.0; nvec.len()],
            };
            let t = env.step(&action, &mut obs);
            seen.extend_from_slice(&obs);
            if t.terminated || t.truncated {
                break;
            }
        }
        seen
    }

    #[test]
    fn seeded_reset_is_reproducible() {
        for id in ENV_IDS {
            let mut env = make(id).unwrap();
            let a = trajectory(&mut env, Some(42));
            let c = trajectory(&mut env, None);
            let b = trajectory(&mut env, Some(42));
            assert_eq!(a, b, "{id}");
            assert_ne!(a, c, "{id}: an unseeded reset continues the stream");
        }
    }

    #[test]
    fn minatar_has_no_time_limit() {
        for id in ENV_IDS.iter().filter(|id| id.starts_with("MinAtar/")) {
            assert_eq!(spec(id).unwrap().max_episode_steps, NO_TIME_LIMIT, "{id}");
            assert_eq!(spec(id).unwrap().reward_threshold, None, "{id}");
        }
        struct Forever;
        impl crate::env::Env for Forever {
            fn id(&self) -> &'static str {
                "Forever-v0"
            }
            fn observation_space(&self) -> Space {
                Space::unbounded(1)
            }
            fn action_space(&self) -> Space {
                Space::Discrete { n: 1 }
            }
            fn reset(&mut self, _rng: &mut rand_chacha::ChaCha8Rng, _obs: &mut [f32]) {}
            fn step(&mut self, _action: &[f32], _obs: &mut [f32]) -> crate::env::Transition {
                crate::env::Transition { reward: 0.0, terminated: false, truncated: false }
            }
        }
        let mut env = TimeLimit::custom(Forever, NO_TIME_LIMIT);
        env.reset(None, &mut [0.0]);
        assert!((0..10_000).all(|_| !env.step(&[0.0], &mut [0.0]).truncated));
    }
}
