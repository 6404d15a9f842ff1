//! Signals, as the README promises them, with real processes on loopback: SIGTERM asks the learner to finish
//! its update and checkpoint, and a second signal exits at once (code 130) without waiting for it; SIGTERM asks
//! an actor to send the rollouts it already has and leave (exit 0 within the 2 s flush).

use std::time::{Duration, Instant};
use tests::procs::{Learner, free_port, samples, scrape, start_actor};

/// The tests of this file run one after another (they would fight over the CPU otherwise).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    let guard = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    tests::bin_path("learner");
    tests::bin_path("actor");
    guard
}

/// A learner whose updates take seconds (300 epochs over one 64 x 128-step rollout), so a SIGTERM always finds
/// one running; the second SIGTERM must not wait for it.
#[test]
fn second_signal_exits_the_learner_at_once() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let overrides = [
        "ppo.num_epochs=300",
        "ppo.batch_size=8192",
        "ppo.minibatch_size=64",
        "server.shutdown_grace_seconds=120",
        "total_steps=100000000",
        "target_return=1000000.0",
    ];
    let runs = dir.path().join("runs");
    let mut learner = Learner::start(dir.path(), "learner", &runs, "signals", port, &overrides, false);
    let _actor = start_actor(dir.path(), "actor", port, &["--num-envs", "64", "--rollout-steps", "128"]);
    // One accepted rollout (8192 steps) is a whole batch: the update starts on it at once and runs for seconds.
    let metrics_port = learner.metrics_port;
    learner.proc.wait_for("the first rollout to be accepted", Duration::from_secs(60), |_| {
        let text = scrape(metrics_port)?;
        let accepted = samples(&text, "proxima_learner_rollouts_total")
            .into_iter()
            .filter(|(labels, _)| labels.contains("outcome=\"accepted\""))
            .map(|(_, v)| v)
            .sum::<f64>();
        (accepted >= 1.0).then_some(())
    });
    learner.proc.signal("TERM");
    learner.proc.wait_for("the graceful shutdown to begin", Duration::from_secs(10), |p| {
        p.log().contains("learner shutting down").then_some(())
    });
    assert!(
        learner.proc.exited().is_none(),
        "the learner should still be finishing its update\n{}",
        learner.proc.tail(20)
    );
    let second = Instant::now();
    learner.proc.signal("TERM");
    let status = learner.proc.wait_exit(Duration::from_secs(3), || {});
    let took = second.elapsed();
    assert_eq!(status.code(), Some(130), "the second signal exits with 130\n{}", learner.proc.tail(20));
    assert!(learner.proc.log().contains("second signal"), "{}", learner.proc.tail(20));
    println!("second SIGTERM: learner exited with 130 after {:.0} ms", took.as_secs_f64() * 1e3);
}

/// SIGTERM on an actor: it stops sampling, sends what it already has (the rollouts queued and the one in progress,
/// for at most 2 s) and exits 0. Every rollout its sampler collected reached the learner: the actor's own count of
/// collected rollouts equals the rollouts it sent and the learner's count of those it received, read from the
/// run's metrics.prom that the learner writes when it stops on SIGTERM (its /metrics is off). How many were left
/// for the flush is timing: usually one or two, none when the signal lands just after the sampler handed its last
/// rollout over, before it began the next.
#[test]
fn actor_flushes_and_leaves_on_sigterm() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let runs = dir.path().join("runs");
    // No /metrics: the learner still records them, for the run's metrics.prom, which is read below.
    let args = ["-s", "total_steps=100000000", "-s", "target_return=1000000.0", "--metrics-addr", "none"];
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let config = tests::workspace_root().join("configs/cartpole.toml");
    let mut learner = Learner::with_config(dir.path(), "learner", &config, &runs, "flush", port, &args);
    let mut actor = start_actor(dir.path(), "actor", port, &["--policy-wait-ms", "0"]);
    actor.wait_for("the actor to connect", Duration::from_secs(60), |p| {
        p.log().contains("connected to learner").then_some(())
    });
    learner.proc.wait_for("training to start", Duration::from_secs(60), |_| {
        (!tests::read_progress(&runs.join("flush")).is_empty()).then_some(())
    });
    let term = Instant::now();
    actor.signal("TERM");
    // The flush is bounded by 2 s; the rest is joining threads and exiting, slower on a loaded machine. A hang
    // (a flush that waits on the learner without its bound) would take far longer.
    let status = actor.wait_exit(Duration::from_secs(10), || {});
    let took = term.elapsed();
    assert!(status.success(), "the actor exits 0 after SIGTERM: {status}\n{}", actor.tail(20));
    let log = actor.log();
    let leaving = log.lines().find(|l| l.contains("actor leaving")).unwrap_or_else(|| panic!("no leaving line\n{log}"));
    let count = |key: &str| -> u64 {
        leaving
            .split(&format!("{key}="))
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {key} count in {leaving:?}"))
    };
    let (collected, sent) = (count("collected"), count("sent"));
    assert!(collected >= 1, "the actor trained before the signal, yet collected nothing: {leaving}");
    assert_eq!(sent, collected, "a rollout the sampler collected was not sent: {leaving}");
    println!("actor SIGTERM: exited 0 after {:.0} ms; {leaving}", took.as_secs_f64() * 1e3);
    assert_eq!(learner.terminate(Duration::from_secs(30)).code(), Some(0), "{}", learner.proc.tail(20));
    let text = learner.final_metrics();
    // Each rollout is counted once on arrival (accepted, stale or rejected); `expired` counts accepted ones again.
    let received: f64 = samples(&text, "proxima_learner_rollouts_total")
        .into_iter()
        .filter(|(labels, _)| !labels.contains("outcome=\"expired\""))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(received, sent as f64, "the learner counted another number of rollouts than the actor sent: {leaving}");
}
