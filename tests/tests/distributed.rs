//! End-to-end and fault tests of the distributed mode with real processes: a `learner serve` and `actor`
//! processes on loopback, CartPole-v1. Progress is read from the run's `progress.csv` and the learner's log;
//! every wait is bounded, every child process is killed when its guard drops (also when a test fails), and the
//! assertions are on env steps, policy versions and behaviour, never on speed.
//!
//! The tests run one at a time (they would fight over the CPU otherwise) and print what they measured.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
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

/// A loopback port that was free a moment ago (the tiny race with other processes is accepted).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

const POLL: Duration = Duration::from_millis(100);

/// A child process whose stdout and stderr go to files; killed (SIGKILL) when dropped.
struct Proc {
    name: String,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    exit: Option<ExitStatus>,
}

impl Proc {
    fn spawn(name: &str, bin: &Path, args: &[String], env: &[(&str, String)], dir: &Path) -> Self {
        let stdout = dir.join(format!("{name}.stdout"));
        let stderr = dir.join(format!("{name}.stderr"));
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .current_dir(tests::workspace_root())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("create stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("create stderr file"));
        // Only what the test says: no PROXIMA_* settings leaking in from the caller's environment.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PROXIMA_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("RUST_LOG", "info").env("NO_COLOR", "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name} ({}): {e}", bin.display()));
        Self { name: name.into(), child, stdout, stderr, exit: None }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// None while running, else how it ended.
    fn exited(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().expect("poll child process");
        }
        self.exit
    }

    /// Sends `signal` (e.g. `TERM`) with kill(1).
    fn signal(&self, signal: &str) {
        let status = Command::new("kill").args(["-s", signal, &self.pid().to_string()]).status().expect("run kill(1)");
        assert!(status.success(), "kill -s {signal} {} ({}) failed", self.pid(), self.name);
    }

    /// SIGKILL, and reap it.
    fn kill(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            self.exit = self.child.wait().ok();
        }
    }

    /// Waits for the process to exit, calling `tick` every poll; panics with its log after `timeout`.
    fn wait_exit(&mut self, timeout: Duration, mut tick: impl FnMut()) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(Instant::now() < deadline, "{} did not exit within {timeout:?}\n{}", self.name, self.tail(40));
            tick();
            std::thread::sleep(POLL);
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn stdout_text(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// The last `n` lines of stderr, for failure messages.
    fn tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(n)..].join("\n");
        format!(
            "--- {} (pid {}) stderr, last {n} lines ---\n{tail}\n--- stdout ---\n{}",
            self.name,
            self.pid(),
            self.stdout_text()
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("{}", self.tail(25));
        }
    }
}

/// A `learner serve` process with a CartPole config, its run directory and its metrics port.
struct Learner {
    proc: Proc,
    run_dir: PathBuf,
    metrics_port: u16,
}

impl Learner {
    /// Starts `learner serve` for run `runs/<run>` on 127.0.0.1:`port`, with `-s` overrides.
    fn start(dir: &Path, label: &str, run: &str, port: u16, overrides: &[&str], resume: bool) -> Self {
        let runs = dir.join("runs");
        let config = tests::workspace_root().join("configs/cartpole.toml");
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--config".into(),
            config.display().to_string(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--runs-dir".into(),
            runs.display().to_string(),
            "--run-name".into(),
            run.into(),
        ];
        if resume {
            args.push("--resume".into());
        }
        for o in overrides {
            args.extend(["-s".to_string(), o.to_string()]);
        }
        // Metrics only on loopback (where the learner supports them); read for the lag histogram.
        let metrics_port = free_port();
        let env = [("PROXIMA_METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))];
        let proc = Proc::spawn(label, &tests::bin_path("learner"), &args, &env, dir);
        Self { proc, run_dir: runs.join(run), metrics_port }
    }

    fn progress(&self) -> Vec<ProgressRow> {
        read_progress(&self.run_dir)
    }

    /// Number of `actor registered` lines in this process's log.
    fn registrations(&self) -> usize {
        self.proc.log().matches("actor registered").count()
    }

    /// Waits until `ready` returns a value; fails early with the log if the learner exits, and after `timeout`.
    fn wait_for<T>(&mut self, what: &str, timeout: Duration, mut ready: impl FnMut(&Self) -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = ready(self) {
                return v;
            }
            if let Some(status) = self.proc.exited() {
                panic!("learner exited ({status}) while waiting for {what}\n{}", self.proc.tail(40));
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}\n{}",
                self.proc.tail(40)
            );
            std::thread::sleep(POLL);
        }
    }

    /// Waits until `progress.csv` shows a policy version of at least `version`; returns it.
    fn wait_version(&mut self, version: u64, timeout: Duration) -> u64 {
        self.wait_for(&format!("policy version {version}"), timeout, |l| {
            max_version(&l.progress()).filter(|v| *v >= version)
        })
    }

    /// Waits until the log shows `n` registrations in total.
    fn wait_registrations(&mut self, n: usize, timeout: Duration) {
        self.wait_for(&format!("{n} actor registrations"), timeout, |l| (l.registrations() >= n).then_some(()));
    }

    /// The checkpoints written so far: (version, path), oldest first.
    fn checkpoints(&self) -> Vec<(u64, PathBuf)> {
        let Ok(entries) = std::fs::read_dir(self.run_dir.join("checkpoints")) else { return Vec::new() };
        let mut found: Vec<(u64, PathBuf)> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter_map(|p| {
                let name = p.file_name()?.to_str()?;
                let version = name.strip_prefix("checkpoint-")?.strip_suffix(".safetensors")?.parse().ok()?;
                Some((version, p))
            })
            .collect();
        found.sort();
        found
    }

    /// `/metrics` of the learner, when it serves them.
    fn metrics(&self) -> Option<String> {
        scrape(self.metrics_port)
    }

    /// SIGTERM, then waits for a clean exit; returns its stdout.
    fn stop(&mut self, timeout: Duration) -> String {
        self.proc.signal("TERM");
        let status = self.proc.wait_exit(timeout, || {});
        assert!(status.success(), "learner exited with {status} after SIGTERM\n{}", self.proc.tail(40));
        self.proc.stdout_text()
    }
}

/// Starts an actor process for the learner on `port`, by default with 8 CartPole envs; `extra` arguments
/// appended.
fn start_actor(dir: &Path, name: &str, port: u16, extra: &[&str]) -> Proc {
    let url = format!("http://127.0.0.1:{port}");
    let mut args: Vec<String> =
        ["--learner", &url, "--env", "CartPole-v1", "--name", name, "--max-backoff-seconds", "1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    if !extra.contains(&"--num-envs") {
        args.extend(["--num-envs".to_string(), "8".to_string()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    Proc::spawn(name, &tests::bin_path("actor"), &args, &[("PROXIMA_METRICS_ADDR", "none".into())], dir)
}

fn max_version(rows: &[ProgressRow]) -> Option<u64> {
    rows.iter().map(|r| r.policy_version).max()
}

/// `GET /metrics` on 127.0.0.1:`port` (plain HTTP/1.1); the body, if it answered 200.
fn scrape(port: u16) -> Option<String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// Samples of metric `name` in Prometheus text: (labels, value).
fn samples<'a>(text: &'a str, name: &str) -> Vec<(&'a str, f64)> {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(r) => r.split_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            Some((labels, value.trim().parse().ok()?))
        })
        .collect()
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

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Learner plus three actor processes train CartPole-v1 to the target return within the step budget.
#[test]
fn three_actors_train_cartpole() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let overrides = ["total_steps=300000", "target_return=475.0"];
    let mut learner = Learner::start(dir.path(), "learner", "three", port, &overrides, false);
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
    assert!(learner.registrations() >= 3, "not all three actors registered:\n{}", learner.proc.log());
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

/// An actor dies (SIGKILL): training continues on the other; a new actor joins and alone keeps training going.
/// The learner then stops cleanly on SIGTERM with a final checkpoint.
#[test]
fn actor_killed_and_replaced() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let overrides = ["total_steps=100000000", "target_return=1000000.0"];
    let mut learner = Learner::start(dir.path(), "learner", "replace", port, &overrides, false);
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
    let mut learner = Learner::start(dir.path(), "learner-1", "resume", port, &overrides, false);
    let actors: Vec<Proc> = (0..2).map(|i| start_actor(dir.path(), &format!("actor-{i}"), port, &[])).collect();
    let timeout = Duration::from_secs(60);
    // Both actors must be on the first learner before it dies: at ~80k env steps/s one actor alone reaches v10
    // before the other has even connected, and that one would then connect only once.
    learner.wait_registrations(2, timeout);
    learner.wait_for("a checkpoint of version >= 10", timeout, |l| {
        l.checkpoints().last().filter(|(v, _)| *v >= 10).map(|_| ())
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
    let mut learner = Learner::start(dir.path(), "learner-2", "resume", port, &overrides, true);
    let rows_before = before.len();
    let first_new = learner
        .wait_for("a progress row from the restarted learner", timeout, |l| l.progress().get(rows_before).cloned());
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
/// actors down instead of buffering their rollouts: the learner's resident memory stays bounded and flat. No
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
    let mut learner = Learner::start(dir.path(), "learner", "backpressure", port, &overrides, false);
    learner.wait_for("the learner to serve", Duration::from_secs(30), |l| {
        l.proc.log().contains("learner serving").then_some(())
    });
    let idle_kib = rss_kib(learner.proc.pid()).expect("learner RSS");
    let _actors: Vec<Proc> = (0..8)
        .map(|i| start_actor(dir.path(), &format!("actor-{i}"), port, &["--num-envs", "64", "--rollout-steps", "128"]))
        .collect();
    learner.wait_registrations(8, Duration::from_secs(90));
    // Measure once the learner is busy training and the queue has filled.
    learner.wait_version(1, Duration::from_secs(90));
    let version_at_start = max_version(&learner.progress()).unwrap_or(0);
    let metrics_at_start = learner.metrics();

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
    let metrics_at_end = learner.metrics();
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
    if let (Some(a), Some(b)) = (&metrics_at_start, &metrics_at_end) {
        let total = |m: &str, name: &str| samples(m, name).iter().map(|(_, v)| v).sum::<f64>();
        let bytes = total(b, "proxima_learner_received_bytes_total") - total(a, "proxima_learner_received_bytes_total");
        let rollouts = total(b, "proxima_learner_rollouts_total") - total(a, "proxima_learner_rollouts_total");
        println!(
            "[backpressure] during the window the learner took {rollouts} rollouts ({:.1} MiB); queue depth at the \
             last update (capacity 4): {:?}; rollouts by outcome since the start: {:?}",
            bytes / 1048576.0,
            samples(b, "proxima_learner_queue_depth").first().map(|s| s.1),
            rollout_outcomes(b)
        );
    }
    assert!(max < 300 * 1024, "learner RSS reached {:.1} MiB", mib(max));
    assert!(growth < 30 * 1024, "learner RSS grew by {:.1} MiB over the last half of the window", mib(growth));
    assert!(version_at_end > version_at_start, "the learner did not train during the window");
}
