//! End-to-end and fault tests of the distributed mode with real processes: a `learner serve` and `actor`
//! processes on loopback, CartPole-v1. Progress is read from the run's `progress.csv` and the learner's log;
//! every wait is bounded, every child process is killed when its guard drops (also when a test fails), and the
//! assertions are on env steps, policy versions and behaviour, never on speed.
//!
//! The tests run one at a time (they would fight over the CPU otherwise) and print what they measured.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tests::procs::{
    Learner, Proc, checkpoints, first_new_row, free_port, max_version, rss_kib, samples, scrape, start_actor, total,
};
use tests::{ProgressRow, read_progress};

/// The tests of this file run one after another.
static SERIAL: Mutex<()> = Mutex::new(());

/// Takes the lock of [`SERIAL`] and makes sure both binaries are built, before anything is started or timed.
fn serial() -> MutexGuard<'static, ()> {
    let guard = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    tests::bin_path("learner");
    tests::bin_path("actor");
    guard
}

/// Starts `learner serve` for run `dir/runs/<run>` on 127.0.0.1:`port`, with `-s` overrides; logs in `dir`.
fn start_learner(dir: &Path, label: &str, run: &str, port: u16, overrides: &[&str], resume: bool) -> Learner {
    Learner::start(dir, label, &dir.join("runs"), run, port, overrides, resume)
}

/// Number of `actor registered` lines in the learner's log.
fn registrations(learner: &Proc) -> usize {
    learner.log().matches("actor registered").count()
}

/// What these tests wait for on a learner, and how they stop it.
trait LearnerExt {
    /// Waits until `progress.csv` shows a policy version of at least `version`; returns it.
    fn wait_version(&mut self, version: u64, timeout: Duration) -> u64;
    /// Waits until the log shows `n` registrations in total.
    fn wait_registrations(&mut self, n: usize, timeout: Duration);
    /// SIGTERM, then waits for a clean exit; returns its stdout.
    fn stop(&mut self, timeout: Duration) -> String;
}

impl LearnerExt for Learner {
    fn wait_version(&mut self, version: u64, timeout: Duration) -> u64 {
        let run_dir = &self.run_dir;
        self.proc.wait_for(&format!("policy version {version}"), timeout, |_| {
            max_version(&read_progress(run_dir)).filter(|v| *v >= version)
        })
    }

    fn wait_registrations(&mut self, n: usize, timeout: Duration) {
        self.proc.wait_for(&format!("{n} actor registrations"), timeout, |p| (registrations(p) >= n).then_some(()));
    }

    fn stop(&mut self, timeout: Duration) -> String {
        let status = self.terminate(timeout);
        assert!(status.success(), "learner exited with {status} after SIGTERM\n{}", self.proc.tail(40));
        self.proc.stdout_text()
    }
}

/// The policy-lag histogram of received rollouts, per bucket (`le` -> count), from the learner's metrics.
fn lag_histogram(metrics: &str) -> Vec<(String, u64)> {
    let mut cumulative: Vec<(String, u64)> = samples(metrics, "proxima_learner_policy_lag_versions_bucket")
        .into_iter()
        .filter_map(|(labels, v)| {
            let le = labels.split(',').find_map(|l| l.strip_prefix("le=\""))?.trim_end_matches('"');
            Some((le.to_string(), v as u64))
        })
        .collect();
    cumulative.sort_by(|a, b| bucket_bound(&a.0).total_cmp(&bucket_bound(&b.0)));
    let mut previous = 0;
    cumulative
        .into_iter()
        .map(|(le, c)| {
            let n = c.saturating_sub(previous);
            previous = c;
            (le, n)
        })
        .collect()
}

fn bucket_bound(le: &str) -> f64 {
    if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::NAN) }
}

/// Rollouts the learner answered, by outcome label (accepted / stale / rejected), from its metrics.
fn rollout_outcomes(metrics: &str) -> Vec<(String, u64)> {
    samples(metrics, "proxima_learner_rollouts_total")
        .into_iter()
        .filter_map(|(labels, v)| {
            let outcome = labels.split(',').find_map(|l| l.strip_prefix("outcome=\""))?.trim_end_matches('"');
            Some((outcome.to_string(), v as u64))
        })
        .collect()
}

/// Prints the lag and staleness numbers of a run.
fn report_lag(label: &str, rows: &[ProgressRow], metrics: Option<&str>) {
    let trained_updates = rows.windows(2).filter(|w| w[1].policy_version > w[0].policy_version).count()
        + rows.first().map_or(0, |r| usize::from(r.policy_version > 0));
    let stale: u64 = rows.iter().map(|r| r.stale_rollouts).sum();
    let stale_rows = rows.iter().filter(|r| r.stale_rollouts > 0).count();
    let empty_updates = rows.len() - trained_updates;
    println!(
        "[{label}] progress rows {}, updates that trained {trained_updates}, rows without training (all stale) \
         {empty_updates}; rollouts dropped by the trainer for lag (stale_rollouts column): {stale} (in {stale_rows} \
         rows)",
        rows.len()
    );
    match metrics {
        Some(m) => {
            let hist = lag_histogram(m);
            let shown: Vec<String> =
                hist.iter().filter(|(_, n)| *n > 0).map(|(le, n)| format!("<={le}: {n}")).collect();
            println!("[{label}] policy lag of received rollouts (versions, from /metrics): {}", shown.join(", "));
            println!("[{label}] rollouts by outcome at submission (from /metrics): {:?}", rollout_outcomes(m));
        }
        None => println!("[{label}] learner metrics not available; lag histogram not shown"),
    }
}

/// Learner plus three actor processes train CartPole-v1 to the target return within the step budget.
#[test]
fn three_actors_train_cartpole() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let overrides = ["total_steps=300000", "target_return=475.0"];
    let mut learner = start_learner(dir.path(), "learner", "three", port, &overrides, false);
    let _actors: Vec<Proc> = (0..3).map(|i| start_actor(dir.path(), &format!("actor-{i}"), port, &[])).collect();
    let started = Instant::now();
    let mut metrics = None;
    let metrics_port = learner.metrics_port;
    let mut last_scrape = Instant::now();
    let status = learner.proc.wait_exit(Duration::from_secs(300), || {
        if last_scrape.elapsed() > Duration::from_millis(500) {
            metrics = scrape(metrics_port).or(metrics.take());
            last_scrape = Instant::now();
        }
    });
    let elapsed = started.elapsed();
    assert!(status.success(), "learner failed: {status}\n{}", learner.proc.tail(40));
    let stdout = learner.proc.stdout_text();
    assert!(stdout.contains("learner stopped"), "unexpected stdout: {stdout}");
    let rows = learner.progress();
    let last = rows.last().expect("progress.csv has rows");
    let mean = last.mean_return.expect("episodes finished");
    assert!(mean >= 475.0, "target not reached: {last:?}");
    assert!(last.env_steps <= 300_000, "over the step budget: {last:?}");
    assert!(registrations(&learner.proc) >= 3, "not all three actors registered:\n{}", learner.proc.log());
    println!(
        "[three actors] reached mean return {mean:.1} at {} env steps, policy v{}; learner wall time {:.1} s, \
         {:.1} s from starting the actors to the learner's exit; learner: {}",
        last.env_steps,
        last.policy_version,
        last.wall_seconds,
        elapsed.as_secs_f64(),
        stdout.trim()
    );
    report_lag("three actors", &rows, metrics.as_deref());
}

/// Actors take their shape from the learner: one started without `--num-envs` steps the config's
/// `actors.num_envs` (12 here, not the actor's old default of 8); one asking for 5 is accepted, the learner says what
/// its rollouts become and, once an update trains on another batch than the config's, what the batch became.
#[test]
fn actors_take_the_learners_env_count() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let overrides = ["actors.num_envs=12", "total_steps=100000000", "target_return=1000000.0"];
    let mut learner = start_learner(dir.path(), "learner", "shape", port, &overrides, false);
    let url = format!("http://127.0.0.1:{port}");
    let args: Vec<String> =
        ["--learner", &url, "--env", "CartPole-v1", "--name", "plain", "--max-backoff-seconds", "1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let env = [("PROXIMA_METRICS_ADDR", "none".to_string())];
    let _plain = Proc::spawn("plain", &tests::bin_path("actor"), &args, &env, dir.path());
    let line = learner.proc.wait_for("the plain actor to register", Duration::from_secs(60), |p| {
        p.log().lines().find(|l| l.contains("actor registered") && l.contains("name=plain")).map(str::to_string)
    });
    assert!(line.contains("num_envs=12"), "the actor without --num-envs steps the config's count: {line}");

    let _five = start_actor(dir.path(), "five", port, &["--num-envs", "5"]);
    let warned = learner.proc.wait_for("the learner to name the other count", Duration::from_secs(60), |p| {
        p.log().lines().find(|l| l.contains("the actor steps 5 envs")).map(str::to_string)
    });
    assert!(warned.contains("actors.num_envs is 12"), "{warned}");
    let batch = learner.proc.wait_for("the effective batch to be logged", Duration::from_secs(60), |p| {
        p.log().lines().find(|l| l.contains("this update trains on")).map(str::to_string)
    });
    assert!(batch.contains("the config's batch is"), "{batch}");
    println!("[shape] {line}\n[shape] {warned}\n[shape] {batch}");
    assert_eq!(learner.terminate(Duration::from_secs(30)).code(), Some(0), "{}", learner.proc.tail(20));
}

/// An actor dies (SIGKILL): training continues on the other; a new actor joins and alone keeps training going.
/// The learner then stops cleanly on SIGTERM with a final checkpoint.
#[test]
fn actor_killed_and_replaced() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let overrides = ["total_steps=100000000", "target_return=1000000.0"];
    let mut learner = start_learner(dir.path(), "learner", "replace", port, &overrides, false);
    let mut first = start_actor(dir.path(), "actor-0", port, &[]);
    let mut second = start_actor(dir.path(), "actor-1", port, &[]);
    let timeout = Duration::from_secs(60);
    learner.wait_registrations(2, timeout);
    let v0 = learner.wait_version(5, timeout);

    first.kill();
    let v1 = max_version(&learner.progress()).unwrap_or(v0);
    let v1_after = learner.wait_version(v1 + 10, timeout);
    println!("[replace] actor-0 killed at v{v1}; training went on to v{v1_after} with actor-1 alone");

    let _third = start_actor(dir.path(), "actor-2", port, &[]);
    learner.wait_registrations(3, timeout);
    // Leave only the newcomer: actor-1 leaves gracefully, so any further progress comes from actor-2.
    second.signal("TERM");
    let status = second.wait_exit(Duration::from_secs(20), || {});
    assert!(status.success(), "actor-1 exited with {status} after SIGTERM\n{}", second.tail(20));
    let v2 = max_version(&learner.progress()).unwrap_or(v1_after);
    let v2_after = learner.wait_version(v2 + 10, timeout);
    println!("[replace] actor-2 registered; after actor-1 left at v{v2}, actor-2 alone drove training to v{v2_after}");

    let stdout = learner.stop(Duration::from_secs(60));
    assert!(stdout.contains("learner stopped"), "unexpected stdout: {stdout}");
    let final_version = max_version(&learner.progress()).expect("progress rows");
    let checkpoints = learner.checkpoints();
    let (newest, _) = checkpoints.last().unwrap_or_else(|| panic!("no checkpoint in {}", learner.run_dir.display()));
    assert_eq!(*newest, final_version, "the final checkpoint holds the final policy: {checkpoints:?}");
    assert!(learner.run_dir.join("model.safetensors").is_file(), "model.safetensors missing");
    println!("[replace] learner stopped on SIGTERM at v{final_version}: {}", stdout.trim());
}

/// The learner dies (SIGKILL) and is restarted with --resume on the same port and run directory: it continues
/// from its newest checkpoint, the running actors reconnect by themselves, and training reaches the target.
#[test]
fn learner_killed_and_resumed() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let overrides = ["server.checkpoint_every=5", "total_steps=400000", "target_return=475.0"];
    let mut learner = start_learner(dir.path(), "learner-1", "resume", port, &overrides, false);
    let actors: Vec<Proc> = (0..2).map(|i| start_actor(dir.path(), &format!("actor-{i}"), port, &[])).collect();
    let timeout = Duration::from_secs(60);
    // Both actors must be on the first learner before it dies: at ~80k env steps/s one actor alone reaches v10
    // before the other has even connected, and that one would then connect only once.
    learner.wait_registrations(2, timeout);
    let checkpoint_dir = learner.run_dir.join("checkpoints");
    learner.proc.wait_for("a checkpoint of version >= 10", timeout, |_| {
        checkpoints(&checkpoint_dir).last().filter(|(v, _)| *v >= 10).map(|_| ())
    });

    learner.proc.kill();
    let before = learner.progress();
    let (resumed_from, _) = learner.checkpoints().pop().expect("a checkpoint");
    let killed_at = max_version(&before).expect("progress rows");
    let steps_at_checkpoint =
        before.iter().rev().find(|r| r.policy_version == resumed_from).expect("a row for the checkpoint").env_steps;
    println!(
        "[resume] learner killed at v{killed_at}; newest checkpoint v{resumed_from} ({steps_at_checkpoint} env steps)"
    );

    let restarted = Instant::now();
    let mut learner = start_learner(dir.path(), "learner-2", "resume", port, &overrides, true);
    let first_new = learner.proc.wait_for("a progress row from the restarted learner", timeout, |_| {
        first_new_row(&before, &read_progress(&learner.run_dir))
    });
    let recovery = restarted.elapsed();
    assert!(learner.proc.log().contains("resumed"), "no `resumed` in the log\n{}", learner.proc.tail(40));
    assert!(
        first_new.policy_version > resumed_from,
        "the restarted learner published v{} after resuming from v{resumed_from}",
        first_new.policy_version
    );
    assert!(
        first_new.env_steps > steps_at_checkpoint,
        "env steps restarted from {} instead of continuing from {steps_at_checkpoint}",
        first_new.env_steps
    );
    learner.wait_registrations(2, timeout);
    let reconnect = restarted.elapsed();
    println!(
        "[resume] restarted learner resumed from v{resumed_from}; first new policy v{} ({} env steps) published \
         {:.2} s after the restart; both actors re-registered within {:.2} s",
        first_new.policy_version,
        first_new.env_steps,
        recovery.as_secs_f64(),
        reconnect.as_secs_f64()
    );

    let status = learner.proc.wait_exit(Duration::from_secs(300), || {});
    assert!(status.success(), "restarted learner failed: {status}\n{}", learner.proc.tail(40));
    let rows = learner.progress();
    let last = rows.last().expect("progress rows");
    let mean = last.mean_return.expect("episodes finished");
    assert!(mean >= 475.0, "target not reached after the restart: {last:?}");
    assert!(last.env_steps <= 400_000, "over the step budget: {last:?}");
    for actor in &actors {
        let connects = actor.log().matches("connected to learner").count();
        assert!(connects >= 2, "{} connected {connects} times\n{}", actor.name, actor.tail(20));
    }
    println!(
        "[resume] target reached after the restart: mean return {mean:.1} at {} env steps, v{}",
        last.env_steps, last.policy_version
    );
}

/// With a deliberately slow trainer (100 epochs over 8192-sample batches, seconds per update) and eight actors
/// offering far more than it consumes (64 envs x 128 steps, ~280 KB per rollout), the bounded queue (4) slows the
/// actors down instead of buffering their rollouts: over a 15 s window the rollouts accepted are at most those
/// trained plus the queue and the one in the trainer's hands, and the learner's resident memory stays bounded. No
/// rollout expires, so without backpressure the learner would have to hold everything the actors offer (several
/// MB per second).
#[test]
fn backpressure_bounds_learner_memory() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    // No rollout ever expires (max_policy_lag is huge), so whatever the actors push would stay in memory if
    // nothing pushed back.
    let overrides = [
        "ppo.num_epochs=100",
        "server.queue_capacity=4",
        "ppo.max_policy_lag=1000000",
        "total_steps=100000000",
        "target_return=1000000.0",
    ];
    let mut learner = start_learner(dir.path(), "learner", "backpressure", port, &overrides, false);
    learner.proc.wait_for("the learner to serve", Duration::from_secs(30), |p| {
        p.log().contains("learner serving").then_some(())
    });
    let idle_kib = rss_kib(learner.proc.pid()).expect("learner RSS");
    let _actors: Vec<Proc> = (0..8)
        .map(|i| start_actor(dir.path(), &format!("actor-{i}"), port, &["--num-envs", "64", "--rollout-steps", "128"]))
        .collect();
    learner.wait_registrations(8, Duration::from_secs(90));
    // Measure once the learner is busy training and the queue has filled.
    learner.wait_version(1, Duration::from_secs(90));
    let version_at_start = max_version(&learner.progress()).unwrap_or(0);
    let metrics_at_start = learner.metrics_now();

    let mut rss = Vec::new();
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(15) {
        if let Some(status) = learner.proc.exited() {
            panic!("learner exited ({status}) during the measurement\n{}", learner.proc.tail(40));
        }
        rss.push(rss_kib(learner.proc.pid()).expect("learner RSS"));
        std::thread::sleep(Duration::from_millis(250));
    }
    let rows = learner.progress();
    let version_at_end = max_version(&rows).unwrap_or(0);
    let metrics_at_end = learner.metrics_now();
    let mib = |kib: u64| kib as f64 / 1024.0;
    let max = *rss.iter().max().expect("samples");
    let (first_half, second_half) = rss.split_at(rss.len() / 2);
    let peak = |xs: &[u64]| xs.iter().copied().max().unwrap_or(0);
    let trough = |xs: &[u64]| xs.iter().copied().min().unwrap_or(0);
    // Each update allocates and frees its batch, so RSS swings within an update period (a few seconds); growth is
    // the rise of the peak from the first half of the window to the second.
    let growth = peak(second_half).saturating_sub(peak(first_half));
    let per_second: Vec<String> = rss.chunks(4).map(|c| format!("{:.0}", mib(peak(c)))).collect();
    println!(
        "[backpressure] learner RSS: idle {:.1} MiB; with 8 actors, per-second peaks over 15 s (MiB): [{}]; max \
         {:.1} MiB; first half {:.1}..{:.1}, second half {:.1}..{:.1} MiB; peak growth {:.1} MiB; policy \
         v{version_at_start} -> v{version_at_end} during the window",
        mib(idle_kib),
        per_second.join(", "),
        mib(max),
        mib(trough(first_half)),
        mib(peak(first_half)),
        mib(trough(second_half)),
        mib(peak(second_half)),
        mib(growth)
    );
    let (a, b) = (metrics_at_start, metrics_at_end);
    let bytes = total(&b, "proxima_learner_received_bytes_total") - total(&a, "proxima_learner_received_bytes_total");
    let accepted = |m: &str| rollout_outcomes(m).iter().find(|(o, _)| o == "accepted").map_or(0, |(_, n)| *n);
    let accepted = accepted(&b) - accepted(&a);
    // Every update trains on one 64 x 128-step rollout (the config's batch is smaller than one rollout).
    let trained_steps = total(&b, "proxima_learner_env_steps_total") - total(&a, "proxima_learner_env_steps_total");
    let trained = (trained_steps / (64.0 * 128.0)).round() as u64;
    println!(
        "[backpressure] during the window: {accepted} rollouts accepted ({:.1} MiB received), {trained} trained; queue \
         depth at the last update (capacity 4): {:?}; rollouts by outcome since the start: {:?}",
        bytes / 1048576.0,
        samples(&b, "proxima_learner_queue_depth").first().map(|s| s.1),
        rollout_outcomes(&b)
    );
    // Backpressure, counted: what was accepted in the window was trained, or waits in the queue (capacity 4) or in
    // the trainer's hands (one rollout); the 8 actors offer many times that.
    assert!(
        accepted <= trained + 4 + 1,
        "{accepted} rollouts accepted but only {trained} trained: the learner buffers what it cannot train on"
    );
    assert!(version_at_end > version_at_start, "the learner did not train during the window");
    assert!(max < 300 * 1024, "learner RSS reached {:.1} MiB", mib(max));
}
