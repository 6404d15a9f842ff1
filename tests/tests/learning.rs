//! Learning tests: PPO must solve CartPole-v1 (mean return of the last 100 episodes >= 475) within a bound on
//! env steps, for fixed seeds, with both objectives. Bounds are on steps, never on time.

use learner::config::TrainConfig;
use proxima_cli::local::TrainSummary;

const STEP_BUDGET: u64 = 150_000;

fn solve_cartpole(seed: u64, extra: &[&str]) -> u64 {
    let budget = [format!("total_steps={STEP_BUDGET}"), "target_return=475.0".to_string()];
    let overrides: Vec<&str> = budget.iter().map(String::as_str).chain(extra.iter().copied()).collect();
    let (_runs, summary) = run("cartpole.toml", seed, &overrides);
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

/// Trains `config` (in `configs/`) with `seed` and `extra` overrides in a temporary runs directory (returned, so
/// the run directory lives as long as the caller keeps it).
fn run(config: &str, seed: u64, extra: &[&str]) -> (tempfile::TempDir, TrainSummary) {
    let runs = tempfile::tempdir().expect("temp dir");
    let mut overrides = vec![format!("seed={seed}"), format!("runs_dir={:?}", runs.path().display().to_string())];
    overrides.extend(extra.iter().map(|s| s.to_string()));
    let path = tests::workspace_root().join("configs").join(config);
    let cfg = TrainConfig::load(Some(&path), &overrides).expect("config");
    let summary =
        proxima_cli::local::train(&cfg, false, tokio_util::sync::CancellationToken::new(), &Default::default())
            .expect("training runs");
    println!(
        "{config} seed {seed} {extra:?}: target at {:?}, {} env steps, {:.1} s, mean return {:?}",
        summary.target_reached_at, summary.env_steps, summary.wall_seconds, summary.mean_return
    );
    (runs, summary)
}

/// [`run`]'s final 100-episode mean return and the env step at which the config's target was reached.
fn train(config: &str, seed: u64, extra: &[&str]) -> (f64, Option<u64>) {
    let (_runs, summary) = run(config, seed, extra);
    (summary.mean_return.unwrap_or(f64::NAN), summary.target_reached_at)
}

/// proxima/Recall-v0 (remember a cue for 9 steps): a GRU reaches the optimum (0.95 of the 1.0 a remembering policy
/// gets) within 150k steps for 3 seeds (measured: 44.0k, 74.8k, 49.7k), and so do separate actor and critic GRUs
/// (measured: 43.5k, 44.5k, 58.9k; held-out seed 4 did not within 200k, docs/results.md), while the same config
/// without a core stays at or below the 0.25 every memoryless policy gets (measured: 0.17).
#[test]
fn recall_is_learned_with_memory_and_not_without() {
    for (seed, trunk) in (1..=3).flat_map(|s| [(s, "model.shared_trunk=true"), (s, "model.shared_trunk=false")]) {
        let (mean, reached) = train("recall.toml", seed, &["total_steps=150000", trunk]);
        assert!(reached.is_some(), "seed {seed}, {trunk}: the GRU did not reach 0.95 (mean return {mean})");
    }
    let (mean, reached) = train("recall.toml", 1, &["total_steps=150000", "model.core=\"none\""]);
    assert!(reached.is_none() && mean < 0.4, "memoryless: mean return {mean}, above what no memory allows");
}

/// CartPole without velocities (proxima/CartPoleNoVelocity-v1): in 150k steps the LSTM config reaches a mean
/// return of 150 (measured 200.9 for seed 1; the full runs reach 475 at 418k-486k steps, docs/results.md), and the
/// same config without a core stays below 100 (its best mean over 600k steps: 51).
#[test]
fn masked_cartpole_needs_memory() {
    let (lstm, _) = train("cartpole_lstm.toml", 1, &["total_steps=150000"]);
    assert!(lstm >= 150.0, "the LSTM's mean return is {lstm}");
    let (none, _) = train("cartpole_lstm.toml", 1, &["total_steps=150000", "model.core=\"none\""]);
    assert!(none < 100.0, "the memoryless policy's mean return is {none}");
}
