//! The `learner eval` and `learner render` command lines on a freshly trained (short) CartPole run.

use std::process::{Command, Output};

fn learner(args: &[&str]) -> Output {
    Command::new(tests::bin_path("learner")).args(args).output().expect("run learner")
}

#[test]
fn eval_and_render_a_trained_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let runs = dir.path().display().to_string();
    let config = tests::workspace_root().join("configs/cartpole.toml").display().to_string();
    let train =
        learner(&["train", "--config", &config, "--total-steps", "2048", "--runs-dir", &runs, "--run-name", "r"]);
    assert!(train.status.success(), "train: {}", String::from_utf8_lossy(&train.stderr));
    let model = dir.path().join("r/model.safetensors").display().to_string();

    let eval = learner(&["eval", "--checkpoint", &model, "--episodes", "4", "--deterministic", "--env", "CartPole-v1"]);
    assert!(eval.status.success(), "eval: {}", String::from_utf8_lossy(&eval.stderr));
    let stdout = String::from_utf8_lossy(&eval.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0].starts_with("CartPole-v1 over 4 episodes (deterministic): return"), "{stdout}");
    let report: serde_json::Value = serde_json::from_str(lines[1]).expect("JSON line");
    assert_eq!(report["episodes"], 4);
    assert_eq!(report["returns"].as_array().map(Vec::len), Some(4));
    for key in ["mean_return", "std_return", "min_return", "max_return", "mean_length", "min_length", "max_length"] {
        assert!(report[key].is_number(), "{key} missing: {stdout}");
    }

    let wrong = learner(&["eval", "--checkpoint", &model, "--episodes", "1", "--env", "Acrobot-v1"]);
    assert!(!wrong.status.success());
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(stderr.contains("CartPole-v1") && stderr.contains("Acrobot-v1"), "{stderr}");

    let gif = dir.path().join("episode.gif");
    let gif_arg = gif.display().to_string();
    let render = learner(&["render", "--checkpoint", &model, "--out", &gif_arg, "--max-frames", "5"]);
    assert!(render.status.success(), "render: {}", String::from_utf8_lossy(&render.stderr));
    assert!(String::from_utf8_lossy(&render.stdout).contains("5 frames"));
    let bytes = std::fs::read(&gif).expect("gif written");
    assert_eq!(&bytes[..6], b"GIF89a");
}
