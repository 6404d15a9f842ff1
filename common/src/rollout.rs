//! A rollout: `T` consecutive steps of `N` environments from one actor, in time-major packed buffers.

use crate::env::{EpisodeStats, Space};
use crate::ids::{ActorId, PolicyVersion};
use crate::model::StateLayout;
use crate::obs::ObsBuf;

/// Environments an actor steps together unless configured otherwise (the actor's `--num-envs`, the learner's
/// `actors.num_envs`).
pub const DEFAULT_NUM_ENVS: usize = 8;

/// Steps per env in one rollout unless configured otherwise (`actors.rollout_steps`).
pub const DEFAULT_ROLLOUT_STEPS: usize = 128;

/// Experience from one actor for one policy version. Index `[t][e]` is `t * num_envs + e`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rollout {
    /// Learner-assigned id of the actor that produced it (stream id for per-actor state such as reward scaling).
    pub actor_id: ActorId,
    /// Version of the policy that chose the actions (and produced `log_probs` and `values`).
    pub policy_version: PolicyVersion,
    /// `T`: steps per env.
    pub num_steps: usize,
    /// `N`: envs.
    pub num_envs: usize,
    /// `[T, N, obs_dim]` raw observations the actions were chosen on, in the observation space's dtype.
    pub obs: ObsBuf,
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
    pub final_obs: ObsBuf,
    /// `[N, obs_dim]` raw observations after the last step (to bootstrap the unfinished episodes).
    pub next_obs: ObsBuf,
    /// Episodes that finished inside this rollout.
    pub episodes: Vec<EpisodeStats>,
    /// Incarnation of the learner process that published `policy_version` (0: in-process or unknown).
    pub incarnation: u64,
    /// `[N, state_dim]` each env's recurrent state before the first step (each core's in turn, LSTM `[h, c]`, GRU
    /// `h`: [`crate::model::StateLayout`]), as the acting policy computed it; empty for a memoryless model.
    pub initial_state: Vec<f32>,
}

/// The largest `|c|` of an LSTM cell state in a rollout: a cell state grows by at most 1 per step, so this bounds
/// episodes of a million steps.
pub const MAX_ABS_CELL_STATE: f32 = 1e6;

/// The largest magnitudes a rollout may hold: values no valid policy or env produces are rejected before they
/// reach the update (the learner's `server.max_abs_*` settings).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    /// Largest `|reward|`; an episode's `|return|` may be at most this times its length.
    pub max_abs_reward: f64,
    /// Largest `|x|` of an observation component.
    pub max_abs_observation: f64,
    /// Largest `|value|` of a behaviour value estimate.
    pub max_abs_value: f64,
    /// Largest `|a|` of a Box action component (sampled actions are unclipped, so the space's bounds do not
    /// apply).
    pub max_abs_action: f64,
    /// Discrete log-probs lie in `[-b, 0]`, Box(d) log-probs in `[-b·d, b·d]`.
    pub max_abs_log_prob_per_dim: f64,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            max_abs_reward: 1e6,
            max_abs_observation: 1e6,
            max_abs_value: 1e9,
            max_abs_action: 1e6,
            max_abs_log_prob_per_dim: 30.0,
        }
    }
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
    /// A finite value outside the [`Bounds`].
    OutOfRange,
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
    /// Checks `initial_state` against the model's state `layout`: empty for a memoryless model; for a recurrent
    /// one `[N, state_dim]` finite values whose hidden states lie in `[-1, 1]` (they are tanh-bounded) and whose
    /// LSTM cell states lie within ±[`MAX_ABS_CELL_STATE`].
    pub fn validate_state(&self, layout: &StateLayout) -> Result<(), RolloutError> {
        use RolloutErrorKind::{NonFinite, OutOfRange, Shape};
        let err = |reason: String, kind| Err(RolloutError { field: "initial_state", reason, kind });
        let want = self.num_envs * layout.dim();
        if self.initial_state.len() != want {
            return match layout.is_recurrent() {
                true => err(
                    format!(
                        "expected {want} values (each env's state before the first step: the model's state is {}), \
                         got {}",
                        layout.describe(),
                        self.initial_state.len()
                    ),
                    Shape,
                ),
                false => err(format!("the model is memoryless, got {} state values", self.initial_state.len()), Shape),
            };
        }
        let dim = layout.dim().max(1);
        for (i, &x) in self.initial_state.iter().enumerate() {
            let (bound, what) = match layout.is_cell(i % dim) {
                true => (MAX_ABS_CELL_STATE, "cell state"),
                false => (1.0 + 1e-5, "hidden state"),
            };
            if !x.is_finite() {
                return err(format!("non-finite value {x} at index {i}"), NonFinite);
            }
            if x.abs() > bound {
                return err(format!("{what} {x} at index {i} is outside [-{bound}, {bound}]"), OutOfRange);
            }
        }
        Ok(())
    }

    /// Number of transitions (`T * N`).
    pub fn len(&self) -> usize {
        self.num_steps * self.num_envs
    }

    /// True when it holds no transition.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the observations take (`obs`, `final_obs` and `next_obs`).
    pub fn obs_bytes(&self) -> usize {
        self.obs.byte_len() + self.final_obs.byte_len() + self.next_obs.byte_len()
    }

    /// Checks shapes, dtypes, finiteness, the magnitude [`Bounds`] (uint8 observations are bounded by their dtype)
    /// and that every action lies in `action_space`.
    pub fn validate(&self, obs_space: &Space, action_space: &Space, bounds: &Bounds) -> Result<(), RolloutError> {
        use RolloutErrorKind::{Action, NonFinite, OutOfRange, Shape};
        let err = |field, reason: String, kind| Err(RolloutError { field, reason, kind });
        let n = self.len();
        if n == 0 {
            return err("num_steps", "rollout is empty".into(), Shape);
        }
        let obs_dim = obs_space.flat_dim();
        let observations = [("obs", &self.obs), ("final_obs", &self.final_obs), ("next_obs", &self.next_obs)];
        for (field, xs) in observations {
            if xs.dtype() != obs_space.dtype() {
                let (got, want) = (xs.dtype().name(), obs_space.dtype().name());
                return err(field, format!("{got} values, the observation space holds {want}"), Shape);
            }
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
        // uint8 observations have no non-finite or out-of-range values.
        let no_obs: &[f32] = &[];
        let (obs, final_obs, next_obs) = (
            self.obs.as_f32().unwrap_or(no_obs),
            self.final_obs.as_f32().unwrap_or(no_obs),
            self.next_obs.as_f32().unwrap_or(no_obs),
        );
        let floats: [(&'static str, &[f32]); 7] = [
            ("obs", obs),
            ("actions", &self.actions),
            ("log_probs", &self.log_probs),
            ("values", &self.values),
            ("rewards", &self.rewards),
            ("final_obs", final_obs),
            ("next_obs", next_obs),
        ];
        for (field, xs) in floats {
            if let Some(i) = xs.iter().position(|x| !x.is_finite()) {
                return err(field, format!("non-finite value {} at index {i}", xs[i]), NonFinite);
            }
        }
        let b = bounds;
        let lp_bound = b.max_abs_log_prob_per_dim * act_dim as f64;
        // A Categorical log-prob is at most 0 (1e-4 of slack for f32 rounding in log-softmax).
        let (lp_low, lp_high) = if action_space.is_discrete() { (-lp_bound, 1e-4) } else { (-lp_bound, lp_bound) };
        // Discrete actions are checked against the space below.
        let max_action = if action_space.is_discrete() { f64::INFINITY } else { b.max_abs_action };
        let ranges: [(&'static str, &[f32], f64, f64, &str); 6] = [
            ("actions", &self.actions, -max_action, max_action, "server.max_abs_action"),
            ("obs", obs, -b.max_abs_observation, b.max_abs_observation, "server.max_abs_observation"),
            ("final_obs", final_obs, -b.max_abs_observation, b.max_abs_observation, "server.max_abs_observation"),
            ("next_obs", next_obs, -b.max_abs_observation, b.max_abs_observation, "server.max_abs_observation"),
            ("values", &self.values, -b.max_abs_value, b.max_abs_value, "server.max_abs_value"),
            ("rewards", &self.rewards, -b.max_abs_reward, b.max_abs_reward, "server.max_abs_reward"),
        ];
        for (field, xs, low, high, key) in ranges {
            if let Some(i) = xs.iter().position(|&x| !(low..=high).contains(&(x as f64))) {
                let (x, low, high) = (show(xs[i]), show(low), show(high));
                return err(field, format!("{x} at index {i} is outside [{low}, {high}] ({key})"), OutOfRange);
            }
        }
        if let Some(i) = self.log_probs.iter().position(|&lp| !(lp_low..=lp_high).contains(&(lp as f64))) {
            return err(
                "log_probs",
                format!(
                    "log-probability {} at index {i} is outside [{}, {}], which no valid policy of this action space \
                     samples (server.max_abs_log_prob_per_dim)",
                    show(self.log_probs[i]),
                    show(lp_low),
                    show(lp_high)
                ),
                OutOfRange,
            );
        }
        for (i, a) in self.actions.chunks_exact(act_dim).enumerate() {
            if let Err(reason) = action_space.check(a) {
                return err("actions", format!("index {i}: {reason}"), Action);
            }
        }
        for ep in &self.episodes {
            if ep.env_index >= self.num_envs || !ep.episode_return.is_finite() {
                return err("episodes", format!("bad episode record {ep:?}"), Shape);
            }
            let limit = b.max_abs_reward * f64::from(ep.length.max(1));
            if ep.episode_return.abs() > limit {
                return err(
                    "episodes",
                    format!(
                        "return {} of a {}-step episode is outside [-{limit:e}, {limit:e}] (server.max_abs_reward \
                         times the length)",
                        show(ep.episode_return),
                        ep.length
                    ),
                    OutOfRange,
                );
            }
        }
        Ok(())
    }
}

/// Holds one actor's episode records to the rewards and done flags it sends: the learner trusts a reported return
/// and length only as far as its own sums of the same rollouts confirm them.
///
/// Per env it carries the reward sum and step count of the episode in progress across the actor's rollouts. Right
/// after registration (the actor's envs may be mid-episode) and after a rejected rollout, the start of each env's
/// current episode is unknown: its first record may then include earlier steps, each worth at most
/// `max_abs_reward`, and it is *unverified*: the learner keeps it out of its returns (see [`EpisodeTracker::check`]).
/// Every later record is verified: it must match the learner's sums exactly (up to f32 rounding of the rewards).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EpisodeTracker {
    /// Per env, the episode in progress, or `None` while its start is unknown.
    partial: Vec<Option<Partial>>,
}

/// Sums of the steps of an episode in progress that the learner has seen.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Partial {
    /// Sum of the (f32) rewards.
    sum: f64,
    /// Steps.
    steps: u32,
    /// Sum of `|reward|`, which scales the rounding tolerance.
    abs: f64,
}

impl Partial {
    fn add(self, other: Partial) -> Partial {
        Partial { sum: self.sum + other.sum, steps: self.steps.saturating_add(other.steps), abs: self.abs + other.abs }
    }
}

impl EpisodeTracker {
    /// Checks `r.episodes` against `r`'s rewards and done flags (shapes already validated) and advances the carried
    /// sums. Returns, per record of `r.episodes`, whether the learner saw that episode whole (verified) or only its
    /// end (after a registration or a rejected rollout). On an error the carried sums are forgotten (the next
    /// records are checked as after registration).
    pub fn check(&mut self, r: &Rollout, max_abs_reward: f64) -> Result<Vec<bool>, RolloutError> {
        let result = self.advance(r, max_abs_reward);
        if result.is_err() {
            self.partial.clear();
        }
        result
    }

    fn advance(&mut self, r: &Rollout, max_abs_reward: f64) -> Result<Vec<bool>, RolloutError> {
        let n = r.num_envs;
        let bad = |reason: String| Err(RolloutError { field: "episodes", reason, kind: RolloutErrorKind::Shape });
        self.partial.resize(n, None);
        let mut verified = vec![false; r.episodes.len()];
        let mut records = vec![Vec::new(); n];
        for (k, ep) in r.episodes.iter().enumerate() {
            records[ep.env_index].push((k, ep));
        }
        for (e, records) in records.iter().enumerate() {
            let mut before = self.partial[e];
            let mut seen = Partial::default();
            let mut next = records.iter();
            for t in 0..r.num_steps {
                let i = t * n + e;
                let reward = f64::from(r.rewards[i]);
                seen = seen.add(Partial { sum: reward, steps: 1, abs: reward.abs() });
                if !(r.terminated[i] || r.truncated[i]) {
                    continue;
                }
                let Some(&(k, ep)) = next.next() else {
                    return bad(format!("env {e} ended an episode at step {t} without an episode record"));
                };
                let ok = match before {
                    Some(b) => {
                        let whole = b.add(seen);
                        // f32 rewards summed here vs the env's f64 rewards summed by the actor.
                        let tolerance = 1e-5 * (whole.abs + 1.0);
                        ep.length == whole.steps && (ep.episode_return - whole.sum).abs() <= tolerance
                    }
                    None => {
                        let unseen = f64::from(ep.length.saturating_sub(seen.steps));
                        let tolerance = 1e-5 * (seen.abs + 1.0) + max_abs_reward * unseen;
                        ep.length >= seen.steps && (ep.episode_return - seen.sum).abs() <= tolerance
                    }
                };
                if !ok {
                    return bad(format!(
                        "env {e}'s record (return {}, length {}) at step {t} disagrees with the rewards and done \
                         flags sent ({} over {} step(s) in this rollout{})",
                        ep.episode_return,
                        ep.length,
                        seen.sum,
                        seen.steps,
                        match before {
                            Some(b) => format!(", {} over {} before it", b.sum, b.steps),
                            None => String::new(),
                        }
                    ));
                }
                verified[k] = before.is_some();
                before = Some(Partial::default());
                seen = Partial::default();
            }
            if next.next().is_some() {
                return bad(format!("env {e} has more episode records than ended episodes"));
            }
            self.partial[e] = before.map(|b| b.add(seen));
        }
        Ok(verified)
    }
}

/// `x` for a message: plain when moderate, in scientific notation when huge or tiny (`1e300`, not 301 digits).
fn show<T: Copy + Into<f64> + std::fmt::Display + std::fmt::LowerExp>(x: T) -> String {
    let v: f64 = x.into();
    if v != 0.0 && !(1e-4..1e7).contains(&v.abs()) { format!("{x:e}") } else { format!("{x}") }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn valid() -> Rollout {
        Rollout {
            num_steps: 2,
            num_envs: 1,
            obs: vec![0.0f32; 8].into(),
            actions: vec![1.0, 0.0],
            log_probs: vec![-0.7, -0.7],
            values: vec![0.1, 0.2],
            rewards: vec![1.0, 1.0],
            terminated: vec![false, false],
            truncated: vec![false, true],
            final_obs: vec![0.0f32; 4].into(),
            next_obs: vec![0.0f32; 4].into(),
            ..Default::default()
        }
    }

    fn obs4() -> Space {
        Space::vector(vec![-1.0; 4], vec![1.0; 4])
    }

    #[test]
    fn initial_states_fit_the_core() {
        use crate::model::Core;
        let layout = |core, cores| StateLayout { core, cores };
        let (lstm, gru) = (layout(Core::Lstm { size: 2 }, 1), layout(Core::Gru { size: 2 }, 1));
        let none = layout(Core::None, 0);
        let r = valid();
        assert_eq!(r.validate_state(&none), Ok(()));
        let missing = r.validate_state(&lstm).unwrap_err();
        assert_eq!((missing.field, missing.kind), ("initial_state", RolloutErrorKind::Shape));
        assert!(missing.reason.contains("state is lstm(2)"), "{}", missing.reason);
        // LSTM rows are [h, c]: h within [-1, 1], c larger.
        let r = Rollout { initial_state: vec![0.5, -1.0, 7.0, -30.0], ..valid() };
        assert_eq!(r.validate_state(&lstm), Ok(()));
        assert!(r.validate_state(&none).is_err(), "a memoryless model takes no state");
        // Separate trunks: the actor's [h, c], then the critic's.
        let separate = layout(Core::Lstm { size: 1 }, 2);
        assert_eq!(r.validate_state(&separate).unwrap_err().kind, RolloutErrorKind::OutOfRange, "7 is an h");
        let r = Rollout { initial_state: vec![0.5, -40.0, 1.0, 7.0], ..valid() };
        assert_eq!(r.validate_state(&separate), Ok(()));
        assert_eq!(r.validate_state(&gru).unwrap_err().kind, RolloutErrorKind::Shape);
        let r = Rollout { initial_state: vec![1.5, 0.0], ..valid() };
        assert_eq!(r.validate_state(&gru).unwrap_err().kind, RolloutErrorKind::OutOfRange);
        let r = Rollout { initial_state: vec![0.0, 0.0, f32::NAN, 0.0], ..valid() };
        assert_eq!(r.validate_state(&lstm).unwrap_err().kind, RolloutErrorKind::NonFinite);
        let r = Rollout { initial_state: vec![0.0, 0.0, 2e6, 0.0], ..valid() };
        assert_eq!(r.validate_state(&lstm).unwrap_err().kind, RolloutErrorKind::OutOfRange);
    }

    #[test]
    fn validation_names_the_field() {
        let space = Space::Discrete { n: 2 };
        let b = Bounds::default();
        assert_eq!(valid().validate(&obs4(), &space, &b), Ok(()));
        let mut r = valid();
        r.rewards[1] = f32::NAN;
        assert_eq!(r.validate(&obs4(), &space, &b).unwrap_err().field, "rewards");
        let mut r = valid();
        r.obs = vec![0.0f32; 7].into();
        assert_eq!(r.validate(&obs4(), &space, &b).unwrap_err().field, "obs");
        let mut r = valid();
        r.actions[0] = 2.0;
        assert_eq!(r.validate(&obs4(), &space, &b).unwrap_err().field, "actions");
        let mut r = valid();
        r.final_obs = ObsBuf::default();
        assert_eq!(r.validate(&obs4(), &space, &b).unwrap_err().field, "final_obs");
    }

    /// uint8 observations: checked for length and dtype, never for range (every byte is a valid pixel), and 4x
    /// smaller than f32.
    #[test]
    fn image_observations_travel_as_bytes() {
        let image = Space::shaped(vec![0.0], vec![255.0], vec![2, 2, 1], crate::env::Dtype::Uint8).unwrap();
        let (space, b) = (Space::Discrete { n: 2 }, Bounds::default());
        let mut r = valid();
        r.obs = vec![255u8; 8].into();
        r.final_obs = vec![0u8; 4].into();
        r.next_obs = vec![7u8; 4].into();
        assert_eq!(r.validate(&image, &space, &b), Ok(()));
        assert_eq!(r.obs_bytes(), 16);
        let mut floats = valid();
        floats.next_obs = vec![7u8; 4].into();
        let e = r.validate(&obs4(), &space, &b).unwrap_err();
        assert_eq!((e.field, e.kind), ("obs", RolloutErrorKind::Shape), "{e}");
        let e = floats.validate(&obs4(), &space, &b).unwrap_err();
        assert_eq!(e.to_string(), "next_obs: uint8 values, the observation space holds float32");
        r.obs = vec![1u8; 7].into();
        assert_eq!(r.validate(&image, &space, &b).unwrap_err().field, "obs");
    }

    /// Episode records are held to the rewards and done flags: exactly once the episode's start has been seen,
    /// within the reward bound for the steps before it otherwise; a made-up return is refused and forgets the sums.
    #[test]
    fn episode_records_must_match_rewards_and_dones() {
        // 3 steps x 1 env: the episode ends at step 1 (rewards 1 + 1), a new one runs on (reward 1).
        let r = |ret: f64, len: u32| Rollout {
            num_steps: 3,
            num_envs: 1,
            rewards: vec![1.0, 1.0, 1.0],
            terminated: vec![false, true, false],
            truncated: vec![false; 3],
            episodes: vec![EpisodeStats { env_index: 0, episode_return: ret, length: len }],
            ..Default::default()
        };
        let mut tracker = EpisodeTracker::default();
        // Start unknown: 10 steps of which 2 seen; the 8 earlier ones at most 1 each under a bound of 1. Accepted,
        // but unverified: the learner did not see it whole.
        assert_eq!(tracker.check(&r(10.0, 10), 1.0), Ok(vec![false]));
        // Now the episode in progress is known (1 over 1 step): the next ends after 2 more with return 3, length 3,
        // and is verified.
        let exact = r(3.0, 3);
        assert_eq!(tracker.check(&exact, 1.0), Ok(vec![true]));
        let mut t2 = tracker.clone();
        assert_eq!(t2.check(&r(3.5, 3), 1.0).unwrap_err().field, "episodes", "return off by 0.5");
        let mut t3 = tracker.clone();
        assert!(t3.check(&r(3.0, 4), 1.0).is_err(), "length off by one");
        // A made-up return of the first record is refused, and the sums are forgotten.
        let mut fresh = EpisodeTracker::default();
        assert!(fresh.check(&r(475.0, 10), 1.0).is_err());
        assert_eq!(fresh, EpisodeTracker::default());
        // The rounding tolerance scales with the whole episode, carried steps included: 199 carried steps of reward
        // -16.27 (f32-rounded as the env would send them) and one more, summed by the actor in f64 from the exact
        // rewards.
        let exact = -16.273_456_789_f64;
        let long = Rollout {
            num_steps: 199,
            num_envs: 1,
            rewards: vec![exact as f32; 199],
            terminated: vec![false; 199],
            truncated: vec![false; 199],
            ..Default::default()
        };
        let end = Rollout {
            num_steps: 1,
            num_envs: 1,
            rewards: vec![exact as f32],
            terminated: vec![false],
            truncated: vec![true],
            episodes: vec![EpisodeStats { env_index: 0, episode_return: exact * 200.0, length: 200 }],
            ..Default::default()
        };
        let mut t = EpisodeTracker::default();
        assert_eq!(t.check(&r(2.0, 2), 20.0), Ok(vec![false]));
        t.partial[0] = Some(Partial::default());
        assert_eq!(t.check(&long, 20.0), Ok(vec![]));
        assert_eq!(t.check(&end, 20.0), Ok(vec![true]));
        // A done without a record, and a record without a done.
        let mut missing = r(2.0, 2);
        missing.episodes.clear();
        assert!(EpisodeTracker::default().check(&missing, 1.0).is_err());
        let mut extra = r(2.0, 2);
        extra.terminated[1] = false;
        assert!(EpisodeTracker::default().check(&extra, 1.0).is_err());
    }

    /// Extreme finite values that no valid policy or env produces are out of range, naming the field.
    #[test]
    fn extreme_finite_values_are_out_of_range() {
        let discrete = Space::Discrete { n: 2 };
        let b = Bounds::default();
        type Poison = fn(&mut Rollout);
        let cases: [(&str, Poison); 9] = [
            ("log_probs", |r| r.log_probs[0] = -100.0),
            ("log_probs", |r| r.log_probs[1] = 1e4),
            ("rewards", |r| r.rewards[0] = 3e38),
            ("rewards", |r| r.rewards[1] = -1e30),
            ("values", |r| r.values[0] = 1e30),
            ("obs", |r| r.obs = vec![0.0, 0.0, 0.0, -3e38, 0.0, 0.0, 0.0, 0.0].into()),
            ("final_obs", |r| r.final_obs = vec![1e30, 0.0, 0.0, 0.0].into()),
            ("next_obs", |r| r.next_obs = vec![0.0, 1e30, 0.0, 0.0].into()),
            ("episodes", |r| r.episodes.push(EpisodeStats { env_index: 0, episode_return: 1e300, length: 10 })),
        ];
        for (field, poison) in cases {
            let mut r = valid();
            poison(&mut r);
            let e = r.validate(&obs4(), &discrete, &b).unwrap_err();
            assert_eq!((e.field, e.kind), (field, RolloutErrorKind::OutOfRange), "{e}");
        }
        // Denormals and the largest values a policy samples pass.
        let mut r = valid();
        r.rewards[0] = 1e-40;
        r.obs = vec![-1e-45, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0].into();
        r.log_probs[0] = -29.0;
        assert_eq!(r.validate(&obs4(), &discrete, &b), Ok(()));
        // Box log-probs may be positive (narrow Gaussians), up to the bound times the action width.
        let boxed = Space::vector(vec![-1.0; 2], vec![1.0; 2]);
        let mut r = valid();
        r.actions = vec![0.5; 4];
        r.log_probs = vec![55.0, -55.0];
        assert_eq!(r.validate(&obs4(), &boxed, &b), Ok(()));
        r.log_probs[0] = 61.0;
        assert_eq!(r.validate(&obs4(), &boxed, &b).unwrap_err().kind, RolloutErrorKind::OutOfRange);
        r.log_probs[0] = 0.0;
        r.actions[3] = -3e38;
        let e = r.validate(&obs4(), &boxed, &b).unwrap_err();
        assert_eq!((e.field, e.kind), ("actions", RolloutErrorKind::OutOfRange), "{e}");
    }
}
