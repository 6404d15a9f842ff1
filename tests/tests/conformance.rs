//! Conformance with gymnasium: `learner env-step` and gymnasium itself (`tests/python/gym_step.py`) step the same
//! seeded random (state, action) pairs. Next state, observation and reward must agree to
//! `|ours - gymnasium| <= 1e-5 * max(1, |gymnasium|)`, `terminated` exactly.
//!
//! Needs Python 3 with gymnasium (`PROXIMA_PYTHON`, else `.venv/bin/python`, else `python3`); without it the
//! tests fail. Run with `--nocapture` to see the worst errors per environment.

use std::f64::consts::PI;
use std::io::Write;
use std::process::{Command, Output, Stdio};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

const SAMPLES: usize = 3000;
const TOLERANCE: f64 = 1e-5;

/// One (state, action) pair to step from.
struct Case {
    state: Vec<f64>,
    action: Value,
}

/// Runs `cmd` with `input` on stdin (written from a thread, so large outputs cannot deadlock).
fn run_piped(cmd: &mut Command, input: String) -> std::io::Result<Output> {
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    // A write error means the child exited early; its status and stderr say why.
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output()?;
    let _ = writer.join();
    Ok(output)
}

fn parse_lines(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("output line {l:?} is not json: {e}")))
        .collect()
}

/// Gymnasium's answers for `cases` of `env`.
fn reference(env: &str, cases: &[Case]) -> Vec<Value> {
    let input: String =
        cases.iter().map(|c| json!({"env": env, "state": c.state, "action": c.action}).to_string() + "\n").collect();
    let python = tests::python();
    let script = tests::workspace_root().join("tests/python/gym_step.py");
    let hint = "the conformance test needs Python 3 with gymnasium: set PROXIMA_PYTHON, or run \
                `python3 -m venv .venv && .venv/bin/pip install gymnasium numpy` in the workspace root";
    let out = run_piped(Command::new(&python).arg(&script), input)
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; {hint}", python.display()));
    assert!(out.status.success(), "{} failed ({}): {}\n{hint}", script.display(), out.status, stderr(&out));
    parse_lines(&out.stdout)
}

/// Our answers for `cases` of `env`, from the `learner env-step` binary.
fn ours(env: &str, cases: &[Case]) -> Vec<Value> {
    let input: String =
        cases.iter().map(|c| json!({"state": c.state, "action": c.action}).to_string() + "\n").collect();
    let out = run_piped(Command::new(tests::bin_path("learner")).args(["env-step", "--env", env]), input)
        .expect("run learner env-step");
    assert!(out.status.success(), "learner env-step --env {env} failed ({}): {}", out.status, stderr(&out));
    parse_lines(&out.stdout)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The worst differences seen so far.
#[derive(Default)]
struct Worst {
    abs: f64,
    rel: f64,
}

impl Worst {
    /// Records `ours` against `gym`; false when they disagree beyond the tolerance (or are not numbers).
    fn check(&mut self, ours: &Value, gym: &Value) -> bool {
        let (Some(a), Some(b)) = (ours.as_f64(), gym.as_f64()) else {
            return false;
        };
        let diff = (a - b).abs();
        self.abs = self.abs.max(diff);
        if b != 0.0 {
            self.rel = self.rel.max(diff / b.abs());
        }
        diff <= TOLERANCE * b.abs().max(1.0)
    }
}

/// Steps `SAMPLES` cases from `generate` through both implementations and compares them.
fn conform(env: &str, seed: u64, generate: impl Fn(&mut ChaCha8Rng, usize) -> Case) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let cases: Vec<Case> = (0..SAMPLES).map(|i| generate(&mut rng, i)).collect();
    let (ours, gym) = (ours(env, &cases), reference(env, &cases));
    assert_eq!((ours.len(), gym.len()), (SAMPLES, SAMPLES), "{env}: answer counts");

    let mut worst = Worst::default();
    for ((case, a), b) in cases.iter().zip(&ours).zip(&gym) {
        let fields_agree = ["state", "obs"].iter().all(|field| {
            let (xs, ys) = (a[field].as_array(), b[field].as_array());
            matches!((xs, ys), (Some(xs), Some(ys)) if xs.len() == ys.len()
                && xs.iter().zip(ys).all(|(x, y)| worst.check(x, y)))
        });
        let agree = fields_agree && worst.check(&a["reward"], &b["reward"]) && a["terminated"] == b["terminated"];
        assert!(
            agree,
            "{env} mismatch\n  state {:?}, action {}\n  ours:      {a}\n  gymnasium: {b}",
            case.state, case.action
        );
    }
    println!(
        "{env}: {SAMPLES} steps compared; worst |ours - gymnasium| = {:.3e}, worst relative = {:.3e}",
        worst.abs, worst.rel
    );
}

/// Uniform in `[-bound, bound]`.
fn sym(rng: &mut ChaCha8Rng, bound: f64) -> f64 {
    rng.random_range(-bound..=bound)
}

/// A mountain-car state: mostly anywhere on the track, some at the left wall moving left, some near `goal`.
fn mountain_car_state(rng: &mut ChaCha8Rng, i: usize, goal: f64) -> Vec<f64> {
    match i % 10 {
        0 => vec![-1.2, -rng.random_range(0.0..=0.07)],
        1 | 2 => vec![goal + sym(rng, 0.05), sym(rng, 0.02)],
        _ => vec![rng.random_range(-1.2..=0.6), sym(rng, 0.07)],
    }
}

#[test]
fn cartpole_matches_gymnasium() {
    let threshold = 12.0 * 2.0 * PI / 360.0;
    conform("CartPole-v1", 1, |rng, i| {
        let mut state = vec![sym(rng, 2.4), sym(rng, 3.0), sym(rng, 0.21), sym(rng, 3.5)];
        // Exactly on a threshold with zero velocity: stays there, and the comparison is strict.
        match i % 50 {
            0 => state[..2].copy_from_slice(&[if rng.random() { 2.4 } else { -2.4 }, 0.0]),
            1 => state[2..].copy_from_slice(&[if rng.random() { threshold } else { -threshold }, 0.0]),
            _ => {}
        }
        Case { state, action: json!(rng.random_range(0..2)) }
    });
}

#[test]
fn acrobot_matches_gymnasium() {
    conform("Acrobot-v1", 2, |rng, _| Case {
        state: vec![sym(rng, PI), sym(rng, PI), sym(rng, 4.0 * PI), sym(rng, 9.0 * PI)],
        action: json!(rng.random_range(0..3)),
    });
}

#[test]
fn mountain_car_matches_gymnasium() {
    conform("MountainCar-v0", 3, |rng, i| Case {
        state: mountain_car_state(rng, i, 0.5),
        action: json!(rng.random_range(0..3)),
    });
}

#[test]
fn continuous_mountain_car_matches_gymnasium() {
    conform("MountainCarContinuous-v0", 4, |rng, i| {
        // Actions up to 1.5x the bounds exercise the clipping and the penalty on the raw action.
        let action = match i % 20 {
            0 => 1.0,
            1 => -1.0,
            _ => sym(rng, 1.5),
        };
        Case { state: mountain_car_state(rng, i, 0.45), action: json!([action]) }
    });
}

#[test]
fn pendulum_matches_gymnasium() {
    // Angles beyond +-pi exercise angle_normalize; torques beyond +-2 the clipping.
    conform("Pendulum-v1", 5, |rng, _| Case {
        state: vec![sym(rng, 2.0 * PI), sym(rng, 8.0)],
        action: json!([sym(rng, 3.0)]),
    });
}

#[test]
fn env_step_names_the_bad_line() {
    let input = "{\"state\": [0, 0, 0, 0], \"action\": 1}\n{\"state\": [0, 0, \n".to_string();
    let out = run_piped(Command::new(tests::bin_path("learner")).args(["env-step", "--env", "CartPole-v1"]), input)
        .expect("run learner env-step");
    assert!(!out.status.success(), "bad json must fail");
    assert!(stderr(&out).contains("line 2"), "stderr must name line 2: {}", stderr(&out));
}

#[test]
fn env_step_lists_known_envs_for_an_unknown_one() {
    let out = run_piped(Command::new(tests::bin_path("learner")).args(["env-step", "--env", "Nope-v0"]), String::new())
        .expect("run learner env-step");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("CartPole-v1, Acrobot-v1"), "{}", stderr(&out));
}
