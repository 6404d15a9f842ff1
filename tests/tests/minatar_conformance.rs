//! Conformance with the Python `minatar` package (1.0.15, through its gymnasium wrapper): for each game and seed,
//! our env and `gymnasium.make("MinAtar/<Game>-v1")` (`tests/python/minatar_steps.py`) are reset with the seed and
//! fed the same random actions, resetting without a seed whenever an episode ends. Every observation (resets
//! included), reward, `terminated` and `truncated` must be identical: same RNG draws, same sticky actions, same
//! game rules.
//!
//! Needs Python 3 with gymnasium and minatar==1.0.15 (`PROXIMA_PYTHON`, else `.venv/bin/python`, else
//! `python3`); without them the tests fail.

use std::io::Write;
use std::process::{Command, Stdio};

use common::env::{Space, make};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Steps per game and seed.
const STEPS: usize = 10_000;
const SEEDS: [u64; 3] = [0, 1, 2024];

/// One line of a trajectory: a reset's observation, or a step's observation and outcome.
#[derive(Debug, Clone, PartialEq)]
enum Line {
    Reset { obs: Vec<u8> },
    Step { obs: Vec<u8>, reward: f64, terminated: bool, truncated: bool },
}

/// numpy's `packbits` of 0/1 values: eight per byte, the first in the high bit, the last byte padded with zeros.
fn pack(obs: &[f32]) -> Vec<u8> {
    obs.chunks(8).map(|c| c.iter().enumerate().fold(0u8, |b, (i, &v)| b | (u8::from(v == 1.0) << (7 - i)))).collect()
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap_or_else(|e| panic!("bad hex {hex:?}: {e}")))
        .collect()
}

/// Our trajectory of `actions` from a reset with `seed`.
fn ours(env_id: &str, seed: u64, actions: &[usize]) -> Vec<Line> {
    let mut env = make(env_id).expect("registered");
    let mut obs = vec![0.0f32; env.observation_space().flat_dim()];
    let values_ok = |obs: &[f32]| obs.iter().all(|&v| v == 0.0 || v == 1.0);
    env.reset(Some(seed), &mut obs);
    let mut lines = vec![Line::Reset { obs: pack(&obs) }];
    for &a in actions {
        let t = env.step(&[a as f32], &mut obs);
        assert!(values_ok(&obs), "{env_id}: an observation value is not 0 or 1");
        lines.push(Line::Step { obs: pack(&obs), reward: t.reward, terminated: t.terminated, truncated: t.truncated });
        if t.terminated || t.truncated {
            env.reset(None, &mut obs);
            lines.push(Line::Reset { obs: pack(&obs) });
        }
    }
    lines
}

/// The package's trajectory, from `tests/python/minatar_steps.py`.
fn package(env_id: &str, seed: u64, actions: &[usize]) -> Vec<Line> {
    let python = tests::python();
    let script = tests::workspace_root().join("tests/python/minatar_steps.py");
    let hint = "the MinAtar conformance test needs Python 3 with gymnasium and minatar==1.0.15: set PROXIMA_PYTHON, \
                or run `.venv/bin/pip install minatar==1.0.15` in the workspace root (scripts/test.sh does)";
    let mut child = Command::new(&python)
        .arg(&script)
        .args(["--env", env_id, "--seed", &seed.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; {hint}", python.display()));
    let input: String = actions.iter().map(|a| format!("{a}\n")).collect();
    let mut stdin = child.stdin.take().expect("piped stdin");
    // A write error means the child exited early; its status and stderr say why.
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("wait for python");
    let _ = writer.join();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{} failed ({}): {stderr}\n{hint}", script.display(), out.status);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            match fields[..] {
                ["r", obs] => Line::Reset { obs: hex_bytes(obs) },
                ["s", obs, reward, terminated, truncated] => Line::Step {
                    obs: hex_bytes(obs),
                    reward: reward.parse().unwrap_or_else(|e| panic!("reward {reward:?}: {e}")),
                    terminated: terminated == "1",
                    truncated: truncated == "1",
                },
                _ => panic!("unexpected line from {}: {line:?}", script.display()),
            }
        })
        .collect()
}

/// The cells `(y, x, channel)` where two packed observations of `channels` channels differ.
fn differing_cells(a: &[u8], b: &[u8], channels: usize) -> Vec<(usize, usize, usize)> {
    let bit = |bytes: &[u8], i: usize| bytes.get(i / 8).map(|byte| (byte >> (7 - i % 8)) & 1);
    (0..100 * channels)
        .filter(|&i| bit(a, i) != bit(b, i))
        .map(|i| (i / channels / 10, i / channels % 10, i % channels))
        .collect()
}

/// Steps `env_id` for each seed through both and reports the first difference.
fn conform(env_id: &str) {
    let probe = make(env_id).expect("registered");
    let Space::Discrete { n } = probe.action_space() else { panic!("{env_id}: not a discrete action space") };
    let channels = probe.observation_space().flat_dim() / 100;
    for seed in SEEDS {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x006d_696e_6174_6172);
        let actions: Vec<usize> = (0..STEPS).map(|_| rng.random_range(0..n)).collect();
        let (ours, theirs) = (ours(env_id, seed, &actions), package(env_id, seed, &actions));
        let (mut step, mut episodes) = (0usize, 0usize);
        for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            let at = format!("{env_id} seed {seed}: first difference at step {step} (line {i}, episode {episodes})");
            match (a, b) {
                (Line::Reset { obs: x }, Line::Reset { obs: y }) => {
                    assert!(
                        x == y,
                        "{at}, field obs after reset: cells (y, x, c) {:?}",
                        differing_cells(x, y, channels)
                    );
                    episodes += 1;
                }
                (
                    Line::Step { obs: x, reward: r, terminated: te, truncated: tr },
                    Line::Step { obs: y, reward: r2, terminated: te2, truncated: tr2 },
                ) => {
                    step += 1;
                    assert!(x == y, "{at}, field obs: cells (y, x, c) {:?} differ", differing_cells(x, y, channels));
                    assert!(r == r2, "{at}, field reward: ours {r}, package {r2}");
                    assert!(te == te2, "{at}, field terminated: ours {te}, package {te2}");
                    assert!(tr == tr2, "{at}, field truncated: ours {tr}, package {tr2}");
                }
                _ => panic!("{at}, field terminated/truncated: ours {a:?}, package {b:?}"),
            }
        }
        assert_eq!(ours.len(), theirs.len(), "{env_id} seed {seed}: trajectory lengths (steps and resets)");
        assert_eq!(step, STEPS, "{env_id} seed {seed}: steps compared");
        println!("{env_id} seed {seed}: {STEPS} steps and {episodes} resets identical");
    }
}

#[test]
fn breakout_matches_the_package() {
    conform("MinAtar/Breakout-v1");
}

#[test]
fn asterix_matches_the_package() {
    conform("MinAtar/Asterix-v1");
}

#[test]
fn freeway_matches_the_package() {
    conform("MinAtar/Freeway-v1");
}

#[test]
fn space_invaders_matches_the_package() {
    conform("MinAtar/SpaceInvaders-v1");
}

#[test]
fn seaquest_matches_the_package() {
    conform("MinAtar/Seaquest-v1");
}
