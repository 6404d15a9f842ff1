//! The benchmark tools measure what they claim: `proxima-bench` subcommands on small workloads (counts, not
//! speeds), and the learner's episode log that `bench/solve.py` reads.

use std::process::Command;

fn bench(args: &[&str]) -> serde_json::Value {
    let out = Command::new(tests::bin_path("proxima-bench")).args(args).output().expect("run proxima-bench");
    assert!(out.status.success(), "proxima-bench {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn num(v: &serde_json::Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("{key} missing in {v}"))
}

#[test]
fn env_stepping_counts_every_step_and_episode() {
    let v = bench(&["env", "--env", "CartPole-v1", "--steps", "20000"]);
    assert_eq!(num(&v, "steps"), 20000.0);
    // Every CartPole step pays 1; episodes of random play last ~10-40 steps.
    assert_eq!(num(&v, "reward_sum"), 20000.0);
    assert!((300.0..=2000.0).contains(&num(&v, "episodes")), "{v}");
    assert!(num(&v, "steps_per_s") > 0.0);
    let v = bench(&["env", "--env", "Pendulum-v1", "--steps", "4000"]);
    assert_eq!(num(&v, "episodes"), 20.0, "Pendulum truncates every 200 steps");
}

#[test]
fn update_runs_every_planned_gradient_step() {
    for backend in ["fused", "candle"] {
        let v = bench(&["update", "--backend", backend, "--minibatch", "64", "--batch", "512", "--epochs", "2"]);
        // What the timed loop should have done, from the arguments and its repeat count; checked against the
        // optimiser's own step counter, which the epoch loop does not write.
        let repeats = num(&v, "repeats");
        assert!(repeats >= 1.0, "{v}");
        assert_eq!(num(&v, "samples"), repeats * 2.0 * 512.0, "{v}");
        assert_eq!(num(&v, "optimizer_steps"), repeats * 2.0 * (512.0 / 64.0), "{v}");
        assert_eq!(num(&v, "gradient_steps"), num(&v, "optimizer_steps"), "{v}");
        assert!(num(&v, "samples_per_s") > 0.0 && num(&v, "floor_samples_per_s") > 0.0);
    }
    let out = Command::new(tests::bin_path("proxima-bench"))
        .args(["update", "--backend", "jax"])
        .output()
        .expect("run proxima-bench");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown backend"));
}

#[test]
fn ingest_delivers_every_accepted_rollout_to_the_trainer() {
    let v = bench(&["ingest", "--clients", "2", "--seconds", "0.5", "--num-envs", "4", "--rollout-steps", "16"]);
    // `rollouts` is counted by the clients (answers received), `drained_env_steps` by the trainer side (lengths of
    // the rollouts it took from the queue): every accepted 4 x 16-step rollout must arrive whole.
    let rollouts = num(&v, "rollouts");
    assert!(rollouts > 0.0, "{v}");
    assert_eq!(num(&v, "drained_env_steps"), rollouts * 64.0, "accepted rollouts all reach the queue");
}

#[test]
fn episode_log_lists_the_episodes_the_learner_trained_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("episodes.txt");
    let out = Command::new(tests::bin_path("learner"))
        .args(["train", "--config"])
        .arg(tests::workspace_root().join("configs/cartpole.toml"))
        .args(["--total-steps", "5000", "--target-return", "1e9", "--runs-dir"])
        .arg(dir.path())
        .args(["--set", &format!("episode_log={:?}", log.display().to_string())])
        .output()
        .expect("run learner");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&log).expect("episode log written");
    let mut steps = 0u64;
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f.len(), 3, "{line}");
        assert!(f[0].parse::<f64>().expect("time") > 1.7e9);
        let (ret, len) = (f[1].parse::<f64>().expect("return"), f[2].parse::<u64>().expect("length"));
        assert_eq!(ret, len as f64, "CartPole pays 1 per step");
        steps += len;
    }
    assert!(text.lines().count() > 20);
    assert!(steps <= 5120, "finished episodes cannot hold more steps than were trained on: {steps}");
}
