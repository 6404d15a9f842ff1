//! `learner env-step --env ID`: step an environment's raw dynamics from given states, for checking against
//! gymnasium (`tests/tests/conformance.rs`).
//!
//! Input: one JSON object per line, `{"state": [...], "action": A}`, where `A` is an integer for a `Discrete`
//! action space and a list of numbers for a `Box`; other keys are ignored and blank lines skipped. For each line
//! the dynamics (no time limit) are set to `state`, stepped once with `A`, and one line is written:
//! `{"state": [...next internal state...], "obs": [...], "reward": R, "terminated": B}`, every number the exact
//! f64 (observations: the f32 widened to f64).

use std::io::{BufRead, Write};

use common::env::{EnvError, Space, make_dynamics};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Why `env-step` stopped; line numbers are 1-based.
#[derive(Debug, thiserror::Error)]
pub enum EnvStepError {
    /// The environment id is not registered.
    #[error(transparent)]
    Env(#[from] EnvError),
    /// A line is not a JSON object with `state` and `action`.
    #[error("line {line}: bad json: {source}")]
    Json { line: usize, source: serde_json::Error },
    /// The state does not fit the environment.
    #[error("line {line}: bad state: {source}")]
    State { line: usize, source: EnvError },
    /// The action is of the wrong kind or length, or outside the action space.
    #[error("line {line}: bad action: {reason}")]
    Action { line: usize, reason: String },
    /// Reading the input or writing the output failed.
    #[error("line {line}: i/o error: {source}")]
    Io { line: usize, source: std::io::Error },
}

#[derive(Deserialize)]
struct Request {
    state: Vec<f64>,
    action: Value,
}

#[derive(Serialize)]
struct Response<'a> {
    state: &'a [f64],
    obs: &'a [f64],
    reward: f64,
    terminated: bool,
}

/// Processes every line of `input`, writing one response line per request line to `output`, and flushes at the
/// end. Returns the number of requests processed. `output` is not buffered here: pass a `BufWriter` for
/// throughput, or a line-flushed writer to answer line by line.
pub fn run(env_id: &str, input: impl BufRead, mut output: impl Write) -> Result<usize, EnvStepError> {
    let mut env = make_dynamics(env_id)?;
    let space = env.action_space();
    let mut obs = vec![0.0_f32; env.observation_space().flat_dim()];
    let mut obs_f64 = Vec::with_capacity(obs.len());
    let mut action = Vec::with_capacity(space.flat_dim());
    let mut processed = 0;
    let mut line_no = 0;
    for line in input.lines() {
        line_no += 1;
        let line = line.map_err(|source| EnvStepError::Io { line: line_no, source })?;
        if line.trim().is_empty() {
            continue;
        }
        let request: Request =
            serde_json::from_str(&line).map_err(|source| EnvStepError::Json { line: line_no, source })?;
        env.set_state(&request.state).map_err(|source| EnvStepError::State { line: line_no, source })?;
        parse_action(&request.action, &space, &mut action)
            .map_err(|reason| EnvStepError::Action { line: line_no, reason })?;

        let t = env.step(&action, &mut obs);
        obs_f64.clear();
        obs_f64.extend(obs.iter().map(|&o| f64::from(o)));
        let response = Response { state: &env.state(), obs: &obs_f64, reward: t.reward, terminated: t.terminated };
        serde_json::to_writer(&mut output, &response)
            .map_err(std::io::Error::from)
            .and_then(|()| output.write_all(b"\n"))
            .map_err(|source| EnvStepError::Io { line: line_no, source })?;
        processed += 1;
    }
    output.flush().map_err(|source| EnvStepError::Io { line: line_no, source })?;
    Ok(processed)
}

/// Decodes the JSON `action` for `space` into `out` (cleared first) and checks it with [`Space::check`].
fn parse_action(action: &Value, space: &Space, out: &mut Vec<f32>) -> Result<(), String> {
    out.clear();
    match (space, action) {
        (Space::Discrete { .. }, Value::Number(n)) => match n.as_f64() {
            Some(x) if x.fract() == 0.0 => out.push(x as f32),
            _ => return Err(format!("discrete action {n} is not an integer")),
        },
        (Space::Discrete { .. }, other) => {
            return Err(format!("discrete action must be an integer, got {other}"));
        }
        (Space::MultiDiscrete { .. }, Value::Array(values)) => {
            for v in values {
                match v.as_f64() {
                    Some(x) if x.fract() == 0.0 => out.push(x as f32),
                    _ => return Err(format!("multi-discrete action must hold integers, got {v}")),
                }
            }
        }
        (Space::MultiDiscrete { .. }, other) => {
            return Err(format!("multi-discrete action must be a list of integers, got {other}"));
        }
        (Space::Box { .. }, Value::Array(values)) => {
            for v in values {
                let x = v.as_f64().ok_or_else(|| format!("box action must hold numbers, got {v}"))?;
                out.push(x as f32);
            }
        }
        (Space::Box { .. }, other) => {
            return Err(format!("box action must be a list of numbers, got {other}"));
        }
    }
    space.check(out).map_err(|e| e.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn run_str(env: &str, input: &str) -> Result<(usize, Vec<Value>), EnvStepError> {
        let mut out = Vec::new();
        let n = run(env, input.as_bytes(), &mut out)?;
        let lines = String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        Ok((n, lines))
    }

    #[test]
    fn steps_each_line_and_skips_blank_ones() {
        let input = "{\"state\": [0, 0, 0, 0], \"action\": 1}\n\n{\"state\": [2.4, 1, 0, 0], \"action\": 0}\n";
        let (n, out) = run_str("CartPole-v1", input).unwrap();
        assert_eq!((n, out.len()), (2, 2));
        // Pushing right from rest: x_dot' = 0.02 * 4400/451 (see common's CartPole tests).
        let x_dot = out[0]["state"][1].as_f64().unwrap();
        assert!((x_dot - 0.02 * 4400.0 / 451.0).abs() < 1e-12, "{x_dot}");
        assert_eq!(out[0]["obs"][1].as_f64(), Some(f64::from(x_dot as f32)));
        assert_eq!((out[0]["reward"].as_f64(), out[0]["terminated"].as_bool()), (Some(1.0), Some(false)));
        assert_eq!(out[1]["terminated"].as_bool(), Some(true));
    }

    #[test]
    fn box_actions_are_lists() {
        let (_, out) = run_str("Pendulum-v1", "{\"state\": [0, 0], \"action\": [2.0]}").unwrap();
        let theta_dot = out[0]["state"][1].as_f64().unwrap();
        assert!((theta_dot - 0.3).abs() < 1e-15, "{theta_dot}");
        let err = run_str("Pendulum-v1", "{\"state\": [0, 0], \"action\": 2.0}").unwrap_err().to_string();
        assert_eq!(err, "line 1: bad action: box action must be a list of numbers, got 2.0");
    }

    #[test]
    fn bad_json_names_its_line() {
        let input = "{\"state\": [0, 0, 0, 0], \"action\": 1}\n{\"state\": [0, 0, 0, 0], \"action\": \n";
        let err = run_str("CartPole-v1", input).unwrap_err().to_string();
        assert!(err.starts_with("line 2: bad json: "), "{err}");
    }

    #[test]
    fn wrong_length_state_is_rejected() {
        let err = run_str("MountainCar-v0", "{\"state\": [0, 0, 0], \"action\": 1}").unwrap_err().to_string();
        assert_eq!(err, "line 1: bad state: MountainCar-v0 state must have 2 values, got 3");
    }

    #[test]
    fn invalid_actions_are_rejected() {
        for (action, reason) in [
            ("3", "discrete action 3 is not an integer in 0..3"),
            ("1.5", "discrete action 1.5 is not an integer"),
            ("[1]", "discrete action must be an integer, got [1]"),
        ] {
            let input = format!("{{\"state\": [0, 0, 0, 0], \"action\": {action}}}");
            let err = run_str("Acrobot-v1", &input).unwrap_err().to_string();
            assert_eq!(err, format!("line 1: bad action: {reason}"));
        }
        let err = run_str("MountainCarContinuous-v0", "{\"state\": [0, 0], \"action\": [1, 2]}").unwrap_err();
        assert_eq!(err.to_string(), "line 1: bad action: box element needs 1 values, got 2");
    }

    #[test]
    fn unknown_env_is_an_error() {
        assert!(matches!(run_str("Nope-v0", ""), Err(EnvStepError::Env(EnvError::UnknownId { .. }))));
    }
}
