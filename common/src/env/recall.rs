//! Recall-v0 (proxima's own): name the cue shown at the start of the episode when asked for it after
//! [`Recall::DELAY`] blank observations, a memory task for recurrent policies.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::helpers::{discrete_value, state_array, write_obs};
use super::{Dynamics, Env, EnvError, Space, Transition};

/// Number of cues, and of actions.
const CUES: usize = 4;
/// The action table: action `i` answers cue `i`.
const ANSWERS: [f64; CUES] = [0.0, 1.0, 2.0, 3.0];
/// Steps taken when the query is shown.
const QUERY: u32 = Recall::DELAY + 1;
/// Steps taken once the episode has ended: the step on the query observation ends it.
const ENDED: u32 = QUERY + 1;
/// Observation values: the cue one-hot, then the query flag.
const OBS_DIM: usize = CUES + 1;

/// `proxima/Recall-v0`: a memory task. At reset a cue `k` is drawn uniformly from `0..4` with the reset's `rng`.
/// Observations are `[one-hot cue (4 values), query flag]`: the reset observation shows the cue (flag 0), the
/// next [`Recall::DELAY`] (8) observations are all zeros, then comes the query `[0, 0, 0, 0, 1]`. Actions are
/// `Discrete(4)`; every action before the query gets reward 0, and the action taken on the query gets reward `+1`
/// if it is `k` (else 0) and terminates the episode. An episode is always `DELAY + 2 = 10` steps.
///
/// The optimum return is **1.0** (remember the cue). Every memoryless policy (one that maps the current
/// observation to an action distribution) has expected return exactly **0.25**: the query observation is the same
/// whatever the cue, so its answer is independent of the uniformly drawn cue.
///
/// The observation returned with the terminating step is all zeros; stepping again after it gives reward 0 and
/// `terminated`, as CartPole does, until [`Env::reset`] or [`Dynamics::set_state`]. An action outside
/// `Discrete(4)` steps nothing and gives a NaN observation and reward, visible to the caller. The state is
/// `[k, steps taken in the episode]` (`0..=DELAY + 2`).
#[derive(Debug, Clone, Default)]
pub struct Recall {
    /// This episode's cue, in `0..CUES`.
    cue: usize,
    /// Steps taken in this episode, at most [`ENDED`]; the observation is a function of it and the cue.
    steps: u32,
}

impl Recall {
    /// Blank observations between the cue and the query.
    pub const DELAY: u32 = 8;
}

impl Env for Recall {
    fn id(&self) -> &'static str {
        "proxima/Recall-v0"
    }

    fn observation_space(&self) -> Space {
        Space::vector(vec![0.0; OBS_DIM], vec![1.0; OBS_DIM])
    }

    fn action_space(&self) -> Space {
        Space::Discrete { n: CUES }
    }

    fn reset(&mut self, rng: &mut ChaCha8Rng, obs: &mut [f32]) {
        self.cue = rng.random_range(0..CUES);
        self.steps = 0;
        self.observe(obs);
    }

    fn step(&mut self, action: &[f32], obs: &mut [f32]) -> Transition {
        let answer = discrete_value(action, &ANSWERS);
        if answer.is_nan() {
            obs.fill(f32::NAN);
            return Transition { reward: f64::NAN, terminated: false, truncated: false };
        }
        let reward = if self.steps == QUERY && answer == ANSWERS[self.cue] { 1.0 } else { 0.0 };
        self.steps = (self.steps + 1).min(ENDED);
        self.observe(obs);
        Transition { reward, terminated: self.steps == ENDED, truncated: false }
    }
}

/// `x` as a whole number in `0..n`, if it is one.
fn whole_below(x: f64, n: u32) -> Option<u32> {
    (x.fract() == 0.0 && (0.0..f64::from(n)).contains(&x)).then_some(x as u32)
}

impl Dynamics for Recall {
    fn state(&self) -> Vec<f64> {
        vec![self.cue as f64, f64::from(self.steps)]
    }

    fn set_state(&mut self, state: &[f64]) -> Result<(), EnvError> {
        let [cue, steps] = state_array(self.id(), state)?;
        let invalid = |reason: String| EnvError::InvalidState { env: self.id(), reason };
        let cue = whole_below(cue, CUES as u32).ok_or_else(|| invalid(format!("cue {cue} is not in 0..{CUES}")))?;
        let steps =
            whole_below(steps, ENDED + 1).ok_or_else(|| invalid(format!("steps {steps} is not in 0..={ENDED}")))?;
        (self.cue, self.steps) = (cue as usize, steps);
        Ok(())
    }

    fn observe(&self, obs: &mut [f32]) {
        let mut values = [0.0; OBS_DIM];
        match self.steps {
            0 => values[self.cue] = 1.0,
            QUERY => values[CUES] = 1.0,
            _ => {}
        }
        write_obs::<OBS_DIM>(obs, values);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::env::{NO_TIME_LIMIT, TimeLimit, make, spec};

    const ID: &str = "proxima/Recall-v0";

    fn env() -> TimeLimit {
        make(ID).unwrap()
    }

    /// Plays one episode from a reset with `seed`, choosing each action from the observations so far; returns the
    /// episode's return, its length and the observations.
    fn episode(
        env: &mut TimeLimit,
        seed: Option<u64>,
        mut policy: impl FnMut(&[[f32; OBS_DIM]]) -> f32,
    ) -> (f64, usize, Vec<[f32; OBS_DIM]>) {
        let mut obs = [f32::NAN; OBS_DIM];
        env.reset(seed, &mut obs);
        let mut seen = vec![obs];
        let mut ret = 0.0;
        for steps in 1..=100 {
            let t = env.step(&[policy(&seen)], &mut obs);
            assert!(!t.truncated);
            seen.push(obs);
            ret += t.reward;
            if t.terminated {
                return (ret, steps, seen);
            }
        }
        panic!("no termination in 100 steps");
    }

    /// The cue of an episode's reset observation.
    fn cue_of(first: &[f32; OBS_DIM]) -> usize {
        first[..CUES].iter().position(|&v| v == 1.0).unwrap()
    }

    #[test]
    fn registered_without_a_time_limit() {
        let spec = spec(ID).unwrap();
        assert_eq!((spec.max_episode_steps, spec.reward_threshold), (NO_TIME_LIMIT, Some(0.95)));
        assert_eq!(env().observation_space(), Space::vector(vec![0.0; 5], vec![1.0; 5]));
        assert_eq!(env().action_space(), Space::Discrete { n: 4 });
    }

    #[test]
    fn cue_then_blanks_then_query_over_ten_steps() {
        let mut env = env();
        for seed in 0..20 {
            let (_, len, seen) = episode(&mut env, Some(seed), |seen| (seen.len() % CUES) as f32);
            assert_eq!(len, 10, "seed {seed}");
            assert_eq!(len, Recall::DELAY as usize + 2);
            let cue = cue_of(&seen[0]);
            let mut first = [0.0; OBS_DIM];
            first[cue] = 1.0;
            assert_eq!(seen[0], first, "seed {seed}");
            assert!(seen[1..=Recall::DELAY as usize].iter().all(|o| *o == [0.0; OBS_DIM]), "seed {seed}: {seen:?}");
            assert_eq!(seen[Recall::DELAY as usize + 1], [0.0, 0.0, 0.0, 0.0, 1.0], "seed {seed}");
            assert_eq!(seen[10], [0.0; OBS_DIM], "seed {seed}: the final observation");
        }
    }

    #[test]
    fn remembering_the_cue_returns_one() {
        let mut env = env();
        let mut cues = [0; CUES];
        for episode_index in 0..200 {
            let seed = (episode_index % 3 == 0).then_some(episode_index);
            // Answers the remembered cue on the query and a wrong action before it (rewarded 0 all the same).
            let remembering = |seen: &[[f32; OBS_DIM]]| {
                let cue = cue_of(&seen[0]);
                let query = seen.last().unwrap()[CUES] == 1.0;
                (if query { cue } else { (cue + 1) % CUES }) as f32
            };
            let (ret, len, seen) = episode(&mut env, seed, remembering);
            assert_eq!((ret, len), (1.0, 10), "episode {episode_index}");
            cues[cue_of(&seen[0])] += 1;
        }
        assert!(cues.iter().all(|&n| n > 30), "every cue is drawn: {cues:?}");
    }

    #[test]
    fn a_wrong_answer_returns_zero() {
        let mut env = env();
        for seed in 0..20 {
            let wrong = |seen: &[[f32; OBS_DIM]]| ((cue_of(&seen[0]) + 1 + seed as usize % 3) % CUES) as f32;
            assert_eq!(episode(&mut env, Some(seed), wrong).0, 0.0, "seed {seed}");
        }
    }

    #[test]
    fn a_memoryless_policy_returns_a_quarter() {
        let mut env = env();
        let episodes = 4000;
        let total: f64 = (0..episodes).map(|i| episode(&mut env, (i == 0).then_some(11), |_| 0.0).0).sum();
        let mean = total / f64::from(episodes);
        assert!((mean - 0.25).abs() <= 0.03, "mean return {mean}");
    }

    #[test]
    fn seeded_resets_draw_the_same_cues() {
        let cues = |env: &mut TimeLimit| {
            let mut obs = [0.0; OBS_DIM];
            (0..50)
                .map(|i| {
                    env.reset((i == 0).then_some(9), &mut obs);
                    cue_of(&obs)
                })
                .collect::<Vec<_>>()
        };
        let (mut a, mut b) = (env(), env());
        assert_eq!(cues(&mut a), cues(&mut b));
    }

    #[test]
    fn stepping_after_the_end_gives_zero_reward() {
        let mut env = Recall::default();
        env.set_state(&[2.0, f64::from(QUERY)]).unwrap();
        let mut obs = [f32::NAN; OBS_DIM];
        let t = env.step(&[2.0], &mut obs);
        assert_eq!(t, Transition { reward: 1.0, terminated: true, truncated: false });
        assert_eq!(env.state(), [2.0, 10.0]);
        for _ in 0..3 {
            let t = env.step(&[2.0], &mut obs);
            assert_eq!(t, Transition { reward: 0.0, terminated: true, truncated: false });
            assert_eq!(obs, [0.0; OBS_DIM]);
        }
    }

    #[test]
    fn invalid_action_steps_nothing_and_gives_nan() {
        for action in [&[4.0][..], &[0.5], &[-1.0], &[f32::NAN], &[], &[0.0, 1.0]] {
            let mut env = Recall::default();
            env.set_state(&[1.0, f64::from(QUERY)]).unwrap();
            let mut obs = [0.0; OBS_DIM];
            let t = env.step(action, &mut obs);
            assert!(t.reward.is_nan() && !t.terminated, "{action:?}");
            assert!(obs.iter().all(|o| o.is_nan()), "{action:?}");
            assert_eq!(env.state(), [1.0, f64::from(QUERY)], "{action:?}");
        }
    }

    #[test]
    fn set_state_checks_values() {
        let mut env = Recall::default();
        env.set_state(&[3.0, 0.0]).unwrap();
        let mut obs = [f32::NAN; OBS_DIM];
        env.observe(&mut obs);
        assert_eq!(obs, [0.0, 0.0, 0.0, 1.0, 0.0]);
        for bad in [[4.0, 0.0], [-1.0, 0.0], [0.5, 0.0], [f64::NAN, 0.0], [0.0, 11.0], [0.0, 1.5], [0.0, -1.0]] {
            assert!(matches!(env.set_state(&bad), Err(EnvError::InvalidState { .. })), "{bad:?}");
        }
        let err = env.set_state(&[7.0, 0.0]).err().map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("proxima/Recall-v0: invalid state: cue 7 is not in 0..4"));
        assert!(matches!(env.set_state(&[0.0]), Err(EnvError::StateLength { expected: 2, got: 1, .. })));
        assert_eq!(env.state(), [3.0, 0.0], "a refused state changes nothing");
    }
}
