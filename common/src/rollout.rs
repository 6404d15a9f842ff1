//! A rollout: `T` consecutive steps of `N` environments from one actor, in time-major packed buffers.

use crate::env::{EpisodeStats, Space};

/// Experience from one actor for one policy version. Index `[t][e]` is `t * num_envs + e`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rollout {
    /// Learner-assigned id of the actor that produced it (stream id for per-actor state such as reward scaling).
    pub actor_id: u64,
    /// Version of the policy that chose the actions (and produced `log_probs` and `values`).
    pub policy_version: u64,
    /// `T`: steps per env.
    pub num_steps: usize,
    /// `N`: envs.
    pub num_envs: usize,
    /// `[T, N, obs_dim]` raw observations the actions were chosen on.
    pub obs: Vec<f32>,
    /// `[T, N, action_dim]` actions as sampled (unclipped; Discrete as the index in f32).
    pub actions: Vec<f32>,
    /// `[T, N]` behaviour log-probabilities of `actions`.
    pub log_probs: Vec<f32>,
    /// `[T, N]` behaviour value estimates of `obs`.
    pub values: Vec<f32>,
    /// `[T, N]` raw rewards.
    pub rewards: Vec<f32>,
    /// `[T, N]` the episode ended by the task (no bootstrap).
    pub terminated: Vec<bool>,
    /// `[T, N]` the episode ended by the time limit (bootstrap from the final observation).
    pub truncated: Vec<bool>,
    /// `[count(truncated), obs_dim]` raw final observations of truncated steps, in time-major order.
    pub final_obs: Vec<f32>,
    /// `[N, obs_dim]` raw observations after the last step (to bootstrap the unfinished episodes).
    pub next_obs: Vec<f32>,
    /// Episodes that finished inside this rollout.
    pub episodes: Vec<EpisodeStats>,
}

/// The class of a rollout defect (the `reason` label of the rejection metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutErrorKind {
    /// Wrong shape, length or encoding.
    Shape,
    /// NaN or infinity.
    NonFinite,
    /// An action outside the action space.
    Action,
}

/// What is wrong with a rollout, naming the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct RolloutError {
    /// The offending field.
    pub field: &'static str,
    /// Why it is rejected.
    pub reason: String,
    /// The class of defect.
    pub kind: RolloutErrorKind,
}

impl Rollout {
    /// Number of transitions (`T * N`).
    pub fn len(&self) -> usize {
        self.num_steps * self.num_envs
    }

    /// True when it holds no transition.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks shapes, finiteness and that every action lies in `action_space`.
    pub fn validate(&self, obs_dim: usize, action_space: &Space) -> Result<(), RolloutError> {
        use RolloutErrorKind::{Action, NonFinite, Shape};
        let err = |field, reason: String, kind| Err(RolloutError { field, reason, kind });
        let n = self.len();
        if n == 0 {
            return err("num_steps", "rollout is empty".into(), Shape);
        }
        let act_dim = action_space.flat_dim();
        let truncs = self.truncated.iter().filter(|t| **t).count();
        let lens: [(&'static str, usize, usize); 9] = [
            ("obs", self.obs.len(), n * obs_dim),
            ("actions", self.actions.len(), n * act_dim),
            ("log_probs", self.log_probs.len(), n),
            ("values", self.values.len(), n),
            ("rewards", self.rewards.len(), n),
            ("terminated", self.terminated.len(), n),
            ("truncated", self.truncated.len(), n),
            ("final_obs", self.final_obs.len(), truncs * obs_dim),
            ("next_obs", self.next_obs.len(), self.num_envs * obs_dim),
        ];
        for (field, got, want) in lens {
            if got != want {
                return err(field, format!("expected {want} values, got {got}"), Shape);
            }
        }
        let floats: [(&'static str, &[f32]); 7] = [
            ("obs", &self.obs),
            ("actions", &self.actions),
            ("log_probs", &self.log_probs),
            ("values", &self.values),
            ("rewards", &self.rewards),
            ("final_obs", &self.final_obs),
            ("next_obs", &self.next_obs),
        ];
        for (field, xs) in floats {
            if let Some(i) = xs.iter().position(|x| !x.is_finite()) {
                return err(field, format!("non-finite value {} at index {i}", xs[i]), NonFinite);
            }
        }
        if let Some(i) = self.log_probs.iter().position(|lp| *lp > 1e-4 && action_space.is_discrete()) {
            return err("log_probs", format!("log-probability {} > 0 at index {i}", self.log_probs[i]), Shape);
        }
        for (i, a) in self.actions.chunks_exact(act_dim).enumerate() {
            if let Err(reason) = action_space.check(a) {
                return err("actions", format!("index {i}: {reason}"), Action);
            }
        }
        if let Some(ep) = self.episodes.iter().find(|e| e.env_index >= self.num_envs || !e.episode_return.is_finite()) {
            return err("episodes", format!("bad episode record {ep:?}"), Shape);
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn valid() -> Rollout {
        Rollout {
            num_steps: 2,
            num_envs: 1,
            obs: vec![0.0; 8],
            actions: vec![1.0, 0.0],
            log_probs: vec![-0.7, -0.7],
            values: vec![0.1, 0.2],
            rewards: vec![1.0, 1.0],
            terminated: vec![false, false],
            truncated: vec![false, true],
            final_obs: vec![0.0; 4],
            next_obs: vec![0.0; 4],
            ..Default::default()
        }
    }

    #[test]
    fn validation_names_the_field() {
        let space = Space::Discrete { n: 2 };
        assert_eq!(valid().validate(4, &space), Ok(()));
        let mut r = valid();
        r.rewards[1] = f32::NAN;
        assert_eq!(r.validate(4, &space).unwrap_err().field, "rewards");
        let mut r = valid();
        r.obs.pop();
        assert_eq!(r.validate(4, &space).unwrap_err().field, "obs");
        let mut r = valid();
        r.actions[0] = 2.0;
        assert_eq!(r.validate(4, &space).unwrap_err().field, "actions");
        let mut r = valid();
        r.final_obs.clear();
        assert_eq!(r.validate(4, &space).unwrap_err().field, "final_obs");
    }
}
