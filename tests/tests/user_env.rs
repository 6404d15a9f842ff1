//! A user's own Rust environment (`actor/examples/grid_world.rs`, built on the public `common::env::Env` trait and
//! `actor::client::run_env`) trained end to end by a stock `learner serve` whose config describes the env's spaces.

use std::time::Duration;
use tests::procs::{Learner, Proc, free_port, scrape, total};

/// The grid world reaches near its optimal return (0.92; a random walk rarely arrives within the 50-step limit)
/// and the learner rejects none of its rollouts (episode records add up, actions are in the space).
#[test]
fn a_rust_user_env_trains_through_the_example_actor() {
    let example = tests::example_path("actor", "grid_world");
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let config =
        tests::spec_config(dir.path(), "grid_world", "GridWorld-v0", ("Box(0, 1, (2,))", "Discrete(4)"), 30_000);
    let mut learner = Learner::with_config(dir.path(), "learner", &config, &dir.path().join("runs"), "grid", port, &[]);
    let metrics_port = learner.metrics_port;
    // The actor waits for every new policy, so that the run does not depend on timing.
    let actor_args: Vec<String> =
        ["--learner", &format!("http://127.0.0.1:{port}"), "--max-backoff-seconds", "1", "--policy-wait-ms", "60000"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let actor = Proc::spawn("grid-actor", &example, &actor_args, &[], dir.path());
    let mut metrics = None;
    let status = learner.proc.wait_exit(Duration::from_secs(180), || metrics = scrape(metrics_port).or(metrics.take()));
    assert!(status.success(), "learner: {status}\n{}\n{}", learner.proc.tail(20), actor.tail(20));
    let last = learner.progress().last().cloned().expect("progress rows");
    println!(
        "[grid world] {} env steps, policy v{}, mean return {:?}",
        last.env_steps, last.policy_version, last.mean_return
    );
    assert!(last.mean_return.is_some_and(|m| m >= 0.8), "the grid world was not learned: {last:?}");
    assert_eq!(total(&metrics.expect("learner metrics"), "proxima_learner_rejected_total"), 0.0);
    assert_eq!(learner.proc.log().matches("actor registered").count(), 1, "one registration, no reconnects");
    drop(actor);
}
