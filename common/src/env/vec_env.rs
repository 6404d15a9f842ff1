//! N environments stepped together with auto-reset, as gymnasium's `SyncVectorEnv` in `SAME_STEP` mode.

use super::{EnvError, Space, TimeLimit, builtin_factory};

/// Return and length of one finished episode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpisodeStats {
    /// Index of the env inside its vector.
    pub env_index: usize,
    /// Undiscounted sum of rewards.
    pub episode_return: f64,
    /// Number of steps.
    pub length: u32,
}

/// The result of one vectorised step, in flat buffers indexed by env.
#[derive(Debug, Clone, Default)]
pub struct StepBatch {
    /// `[N, obs_dim]`: observations to act on next (already reset where an episode ended).
    pub obs: Vec<f32>,
    /// `[N]` rewards.
    pub rewards: Vec<f32>,
    /// `[N]` task ended.
    pub terminated: Vec<bool>,
    /// `[N]` time limit reached (and not terminated).
    pub truncated: Vec<bool>,
    /// `[N, obs_dim]`: the last observation of an episode that ended this step (garbage elsewhere).
    pub final_obs: Vec<f32>,
    /// Episodes that finished this step.
    pub episodes: Vec<EpisodeStats>,
}

/// A vector of `N` identical environments with auto-reset and episode statistics.
pub struct VecEnv {
    envs: Vec<TimeLimit>,
    obs_dim: usize,
    batch: StepBatch,
    episode_returns: Vec<f64>,
    episode_lengths: Vec<u32>,
}

impl VecEnv {
    /// Builds `num_envs` copies of the built-in env `id`; env `i` is reset with seed `seed + i`.
    pub fn new(id: &str, num_envs: usize, seed: u64) -> Result<Self, EnvError> {
        Self::from_factory(&builtin_factory(id), num_envs, seed)
    }

    /// Builds `num_envs` envs with `factory` (a user's env, or a built-in one); env `i` is reset with seed
    /// `seed + i`.
    pub fn from_factory(factory: &super::EnvFactory, num_envs: usize, seed: u64) -> Result<Self, EnvError> {
        let envs = (0..num_envs).map(|_| factory()).collect::<Result<Vec<_>, _>>()?;
        let obs_dim = envs.first().map_or(0, |e| e.observation_space().flat_dim());
        let mut v = Self {
            envs,
            obs_dim,
            batch: StepBatch {
                obs: vec![0.0; num_envs * obs_dim],
                rewards: vec![0.0; num_envs],
                terminated: vec![false; num_envs],
                truncated: vec![false; num_envs],
                final_obs: vec![0.0; num_envs * obs_dim],
                episodes: Vec::new(),
            },
            episode_returns: vec![0.0; num_envs],
            episode_lengths: vec![0; num_envs],
        };
        for (i, env) in v.envs.iter_mut().enumerate() {
            env.reset(Some(seed.wrapping_add(i as u64)), &mut v.batch.obs[i * obs_dim..(i + 1) * obs_dim]);
        }
        Ok(v)
    }

    /// Number of environments.
    pub fn num_envs(&self) -> usize {
        self.envs.len()
    }

    /// Observation width.
    pub fn obs_dim(&self) -> usize {
        self.obs_dim
    }

    /// Observation space of each env.
    pub fn observation_space(&self) -> Space {
        self.envs[0].observation_space()
    }

    /// Action space of each env.
    pub fn action_space(&self) -> Space {
        self.envs[0].action_space()
    }

    /// Current observations `[N, obs_dim]`.
    pub fn obs(&self) -> &[f32] {
        &self.batch.obs
    }

    /// Steps every env with its slice of `actions` (`[N, action flat dim]`), resetting the ones that end.
    pub fn step(&mut self, actions: &[f32]) -> &StepBatch {
        let d = self.obs_dim;
        let a = actions.len() / self.envs.len().max(1);
        self.batch.episodes.clear();
        for (i, env) in self.envs.iter_mut().enumerate() {
            let obs = &mut self.batch.obs[i * d..(i + 1) * d];
            let t = env.step(&actions[i * a..(i + 1) * a], obs);
            self.episode_returns[i] += t.reward;
            self.episode_lengths[i] += 1;
            self.batch.rewards[i] = t.reward as f32;
            self.batch.terminated[i] = t.terminated;
            self.batch.truncated[i] = t.truncated && !t.terminated;
            if t.terminated || t.truncated {
                self.batch.final_obs[i * d..(i + 1) * d].copy_from_slice(obs);
                self.batch.episodes.push(EpisodeStats {
                    env_index: i,
                    episode_return: self.episode_returns[i],
                    length: self.episode_lengths[i],
                });
                self.episode_returns[i] = 0.0;
                self.episode_lengths[i] = 0;
                env.reset(None, obs);
            }
        }
        &self.batch
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn auto_reset_and_episode_stats_add_up() {
        let (n, steps) = (3, 100);
        let mut envs = VecEnv::new("CartPole-v1", n, 9).unwrap();
        let mut returns = vec![0.0_f64; n];
        let mut lengths = vec![0_u32; n];
        let mut finished_steps = 0;
        for _ in 0..steps {
            // Always pushing left topples the pole within a few dozen steps.
            let batch = envs.step(&vec![0.0; n]);
            for i in 0..n {
                returns[i] += f64::from(batch.rewards[i]);
                lengths[i] += 1;
            }
            for ep in &batch.episodes {
                let i = ep.env_index;
                assert!(batch.terminated[i] && !batch.truncated[i]);
                assert_eq!((ep.episode_return, ep.length), (returns[i], lengths[i]));
                assert!(batch.obs[i * 4..(i + 1) * 4].iter().all(|o| o.abs() < 0.05), "obs is a fresh reset");
                assert!(batch.final_obs[i * 4 + 2].abs() > 0.2, "final obs shows the fallen pole");
                finished_steps += ep.length;
                (returns[i], lengths[i]) = (0.0, 0);
            }
            let ended = batch.episodes.iter().map(|e| e.env_index).collect::<Vec<_>>();
            for i in 0..n {
                assert_eq!(batch.terminated[i], ended.contains(&i));
            }
        }
        assert!(finished_steps > 0);
        assert_eq!(finished_steps + lengths.iter().sum::<u32>(), (n * steps) as u32);
    }

    #[test]
    fn time_limit_truncates_and_resets() {
        let mut envs = VecEnv::new("Pendulum-v1", 2, 0).unwrap();
        let mut sums = [0.0_f64; 2];
        for step in 1..=200 {
            let batch = envs.step(&[0.5, -0.5]);
            sums.iter_mut().zip(&batch.rewards).for_each(|(s, r)| *s += f64::from(*r));
            assert_eq!(batch.truncated, [step == 200; 2], "step {step}");
            assert_eq!(batch.terminated, [false; 2]);
            if step == 200 {
                assert_eq!(batch.episodes.len(), 2);
                for ep in &batch.episodes {
                    assert_eq!(ep.length, 200);
                    assert!((ep.episode_return - sums[ep.env_index]).abs() < 1e-3);
                }
            }
        }
    }

    #[test]
    fn envs_get_consecutive_seeds() {
        let a = VecEnv::new("Acrobot-v1", 2, 5).unwrap();
        let b = VecEnv::new("Acrobot-v1", 1, 6).unwrap();
        assert_eq!(a.obs()[6..], b.obs()[..]);
        assert_ne!(a.obs()[..6], a.obs()[6..]);
        assert!(VecEnv::new("Nope-v0", 1, 0).is_err());
    }
}
