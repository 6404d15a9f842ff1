//! Learning tests: PPO must solve CartPole-v1 (mean return of the last 100 episodes >= 475) within a bound on
//! env steps, for fixed seeds, with both objectives. Bounds are on steps, never on time.

use learner::config::TrainConfig;

const STEP_BUDGET: u64 = 150_000;

fn solve_cartpole(seed: u64, extra: &[&str]) -> u64 {
    let runs = tempfile::tempdir().expect("temp dir");
    let mut overrides = vec![
        format!("seed={seed}"),
        format!("total_steps={STEP_BUDGET}"),
        "target_return=475.0".to_string(),
        format!("runs_dir={:?}", runs.path().display().to_string()),
    ];
    overrides.extend(extra.iter().map(|s| s.to_string()));
    let config = tests::workspace_root().join("configs/cartpole.toml");
    let cfg = TrainConfig::load(Some(&config), &overrides).expect("config");
    let summary =
        proxima_cli::local::train(&cfg, false, tokio_util::sync::CancellationToken::new(), &Default::default())
            .expect("training runs");
    println!(
        "seed {seed} {extra:?}: {:?} after {} env steps, {:.1} s, mean return {:?}",
        summary.target_reached_at, summary.env_steps, summary.wall_seconds, summary.mean_return
    );
    let reached = summary.target_reached_at.unwrap_or_else(|| {
        panic!("seed {seed} {extra:?}: mean return {:?} after {} steps", summary.mean_return, summary.env_steps)
    });
    assert!(reached <= STEP_BUDGET);
    for file in ["config.toml", "progress.csv", "model.safetensors"] {
        assert!(summary.run_dir.join(file).is_file(), "{file} missing");
    }
    reached
}

#[test]
fn cartpole_clip_seed_1() {
    solve_cartpole(1, &[]);
}

#[test]
fn cartpole_clip_seed_2() {
    solve_cartpole(2, &[]);
}

#[test]
fn cartpole_clip_seed_3() {
    solve_cartpole(3, &[]);
}

#[test]
fn cartpole_kl_penalty_seed_1() {
    solve_cartpole(1, &["ppo.objective=\"kl_penalty\""]);
}
