//! A user's own Rust environment (`actor/examples/grid_world.rs`, built on the public `common::env::Env` trait and
//! `actor::client::run_env`) trained end to end by a stock `learner serve` whose config describes the env's spaces.

use std::time::Duration;
use tests::procs::{Learner, Proc, free_port, total};

/// The grid world reaches near its optimal return (0.92; a random walk rarely arrives within the 50-step limit)
/// and the learner rejects none of its rollouts (episode records add up, actions are in the space).
#[test]
fn a_rust_user_env_trains_through_the_example_actor() {
    train_grid_world("Box(0, 1, (2,))", &[]);
}

/// The same grid seen as a 5 x 5 x 1 uint8 image (the env declares the shape and dtype through the `Env` trait):
/// the Rust actor sends bytes, and an MLP on the flattened image learns it as well.
#[test]
fn a_rust_user_env_with_image_observations_trains() {
    train_grid_world("Box(0, 255, (5, 5, 1), uint8)", &["--pixels"]);
}

fn train_grid_world(observation_space: &str, flags: &[&str]) {
    let example = tests::example_path("actor", "grid_world");
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let spaces = (observation_space, "Discrete(4)");
    let config = tests::spec_config(dir.path(), "grid_world", "GridWorld-v0", spaces, 30_000);
    let mut learner = Learner::with_config(dir.path(), "learner", &config, &dir.path().join("runs"), "grid", port, &[]);
    // The actor waits for every new policy, so that the run does not depend on timing.
    let url = format!("http://127.0.0.1:{port}");
    let base = ["--learner", &url, "--max-backoff-seconds", "1", "--policy-wait-ms", "60000"];
    let actor_args: Vec<String> = base.iter().chain(flags).map(|s| s.to_string()).collect();
    let actor = Proc::spawn("grid-actor", &example, &actor_args, &[], dir.path());
    let status = learner.proc.wait_exit(Duration::from_secs(180), || {});
    assert!(status.success(), "learner: {status}\n{}\n{}", learner.proc.tail(20), actor.tail(20));
    let last = learner.progress().last().cloned().expect("progress rows");
    println!(
        "[grid world {observation_space}] {} env steps, policy v{}, mean return {:?}",
        last.env_steps, last.policy_version, last.mean_return
    );
    assert!(last.mean_return.is_some_and(|m| m >= 0.8), "the grid world was not learned: {last:?}");
    assert_eq!(total(&learner.final_metrics(), "proxima_learner_rejected_total"), 0.0);
    assert_eq!(learner.proc.log().matches("actor registered").count(), 1, "one registration, no reconnects");
    drop(actor);
}
