//! Local `learner train` runs the same session as `learner serve` (`learner::session`): its run directory gets
//! progress, periodic and final checkpoints, the model and `progress.png`; `--resume` continues the newest
//! checkpoint, and a run directory that has checkpoints is not started over without it.

use std::path::Path;
use std::process::{Command, Output};

/// `learner train` on CartPole into `runs/local`, with `extra` flags.
fn train(runs: &Path, extra: &[&str]) -> Output {
    let config = tests::workspace_root().join("configs/cartpole.toml");
    Command::new(tests::bin_path("learner"))
        .arg("train")
        .arg("--config")
        .arg(&config)
        .args(["--run-name", "local", "--set", "server.checkpoint_every=4"])
        .arg("--runs-dir")
        .arg(runs)
        .args(extra)
        .output()
        .expect("run learner train")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn local_training_checkpoints_and_resumes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (runs, run_dir) = (dir.path().join("runs"), dir.path().join("runs/local"));
    let first = train(&runs, &["--total-steps", "8192"]);
    assert!(first.status.success(), "learner train failed:\n{}", text(&first));
    for file in ["config.toml", "progress.csv", "model.safetensors", "progress.png"] {
        assert!(run_dir.join(file).is_file(), "{file} missing from the local run");
    }
    let checkpoints = tests::procs::checkpoints(&run_dir.join("checkpoints"));
    let before = tests::read_progress(&run_dir);
    let last = before.last().expect("progress rows").clone();
    assert_eq!(checkpoints.last().map(|(v, _)| *v), Some(last.policy_version), "final checkpoint: {checkpoints:?}");
    assert!(checkpoints.len() >= 2, "periodic checkpoints as well: {checkpoints:?}");

    let again = train(&runs, &["--total-steps", "16384"]);
    assert!(!again.status.success(), "a run with checkpoints was started over:\n{}", text(&again));
    assert!(text(&again).contains("pass --resume"), "the refusal does not say what to do:\n{}", text(&again));

    let resumed = train(&runs, &["--total-steps", "16384", "--resume"]);
    assert!(resumed.status.success(), "learner train --resume failed:\n{}", text(&resumed));
    assert!(text(&resumed).contains("resumed"), "no resume in the log:\n{}", text(&resumed));
    let after = tests::read_progress(&run_dir);
    assert_eq!(after[..before.len()], before[..], "the first run's rows are kept");
    let steps: Vec<u64> = after.iter().map(|r| r.env_steps).collect();
    assert!(steps.windows(2).all(|w| w[0] < w[1]), "env steps go backwards: {steps:?}");
    let end = after.last().expect("rows");
    assert!(end.env_steps >= 16384 && end.policy_version > last.policy_version, "{end:?} after {last:?}");
    println!(
        "[local run] {} steps (v{}), resumed to {} steps (v{}); {} checkpoints",
        last.env_steps,
        last.policy_version,
        end.env_steps,
        end.policy_version,
        tests::procs::checkpoints(&run_dir.join("checkpoints")).len()
    );
}
