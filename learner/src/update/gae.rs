//! Generalised advantage estimation (Schulman et al. 2016) over time-major `[T, N]` buffers.
//!
//! On `terminated` the episode's value after the step is 0; on `truncated` (a time limit) it is the critic's value
//! of the final observation; either way the recursion restarts there.

/// Inputs of one rollout, all time-major with `N = next_values.len()` envs.
pub struct GaeInput<'a> {
    /// `[T, N]` rewards.
    pub rewards: &'a [f32],
    /// `[T, N]` values of the observations acted on.
    pub values: &'a [f32],
    /// `[T, N]` task ended.
    pub terminated: &'a [bool],
    /// `[T, N]` time limit hit.
    pub truncated: &'a [bool],
    /// `[T, N]` value of the final observation where `truncated` (ignored elsewhere).
    pub final_values: &'a [f32],
    /// `[N]` value of the observation after the last step.
    pub next_values: &'a [f32],
}

/// Returns `(advantages, returns)`, both `[T, N]`, with `returns = advantages + values`.
pub fn gae(input: &GaeInput, gamma: f64, lambda: f64) -> (Vec<f32>, Vec<f32>) {
    let n = input.next_values.len();
    let len = input.rewards.len();
    let mut adv = vec![0.0f32; len];
    let mut last = vec![0.0f64; n];
    for t in (0..len / n.max(1)).rev() {
        for (e, last) in last.iter_mut().enumerate() {
            let i = t * n + e;
            let next_value = if t + 1 == len / n { input.next_values[e] } else { input.values[i + n] } as f64;
            let r = input.rewards[i] as f64;
            let v = input.values[i] as f64;
            *last = if input.terminated[i] {
                r - v
            } else if input.truncated[i] {
                r + gamma * input.final_values[i] as f64 - v
            } else {
                r + gamma * next_value - v + gamma * lambda * *last
            };
            adv[i] = *last as f32;
        }
    }
    let returns = adv.iter().zip(input.values).map(|(a, v)| a + v).collect();
    (adv, returns)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn flat<T>(v: &Value, f: impl Fn(&Value) -> T) -> Vec<T> {
        v.as_array().unwrap().iter().flat_map(|row| row.as_array().unwrap().iter().map(&f)).collect()
    }

    /// `gae.json` from `shared/reference/golden` (numpy, see `tests/fixtures/make_golden.py`).
    #[test]
    fn matches_golden_with_truncation_and_termination() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/golden/gae.json");
        let g: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let f = |v: &Value| v.as_f64().unwrap() as f32;
        let b = |v: &Value| v.as_bool().unwrap();
        let (rewards, values) = (flat(&g["rewards"], f), flat(&g["values"], f));
        let (terminated, truncated) = (flat(&g["terminated"], b), flat(&g["truncated"], b));
        let final_values = flat(&g["final_values"], f);
        let next_values: Vec<f32> = g["next_value"].as_array().unwrap().iter().map(f).collect();
        let input = GaeInput {
            rewards: &rewards,
            values: &values,
            terminated: &terminated,
            truncated: &truncated,
            final_values: &final_values,
            next_values: &next_values,
        };
        let (adv, ret) = gae(&input, g["gamma"].as_f64().unwrap(), g["lam"].as_f64().unwrap());
        let (want_adv, want_ret) = (flat(&g["advantages"], f), flat(&g["returns"], f));
        assert_eq!((adv.len(), ret.len()), (want_adv.len(), want_ret.len()), "one advantage and return per step");
        assert_eq!(adv.len(), rewards.len());
        for i in 0..adv.len() {
            assert!((adv[i] - want_adv[i]).abs() < 1e-5, "adv[{i}] {} vs {}", adv[i], want_adv[i]);
            assert!((ret[i] - want_ret[i]).abs() < 1e-5, "ret[{i}]");
        }
    }

    /// A hand-computed case: one env, steps [continue, truncated, continue, terminated].
    #[test]
    fn hand_computed_single_env() {
        let (g, l) = (0.9, 0.5);
        let input = GaeInput {
            rewards: &[1.0, 2.0, 3.0, 4.0],
            values: &[0.5, 1.0, 1.5, 2.0],
            terminated: &[false, false, false, true],
            truncated: &[false, true, false, false],
            final_values: &[0.0, 10.0, 0.0, 0.0],
            next_values: &[100.0],
        };
        let (adv, _) = gae(&input, g, l);
        let a3 = 4.0 - 2.0; // terminated: no bootstrap, and next_values is ignored
        let a2 = 3.0 + g * 2.0 - 1.5 + g * l * a3;
        let a1 = 2.0 + g * 10.0 - 1.0; // truncated: bootstrap from the final observation, recursion restarts
        let a0 = 1.0 + g * 1.0 - 0.5 + g * l * a1;
        for (got, want) in adv.iter().zip([a0, a1, a2, a3]) {
            assert!((*got as f64 - want).abs() < 1e-5, "{got} vs {want}");
        }
    }
}
