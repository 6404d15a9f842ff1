//! Real `learner` and `actor` processes for end-to-end and fault tests: spawn with arguments, environment and log
//! files, signal, kill, wait (always bounded), read logs, metrics, progress and checkpoints. Every child process
//! is killed when its guard drops, also when a test fails, and its log tail is printed then.

use crate::{ProgressRow, read_progress};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How often waits poll.
pub const POLL: Duration = Duration::from_millis(100);

/// A loopback port that was free a moment ago and that this process has not handed out before, for a child
/// process to listen on. It lies outside the kernel's ephemeral range, so no socket the kernel numbers (an
/// outgoing connection, a `bind` to port 0 in any process, a port Docker publishes) can take it between this
/// probe and the child's bind; only a process binding that very port by number could. (A port from the
/// ephemeral range did get taken that way: a learner of the CI run could not listen.)
pub fn free_port() -> u16 {
    static NEXT: std::sync::Mutex<Option<u16>> = std::sync::Mutex::new(None);
    let (low, high) = probe_range();
    let span = u32::from(high - low) + 1;
    let mut next = NEXT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    // Test binaries that run at the same time (two checkouts on one machine) start at different ports.
    let mut offset = next.map_or(std::process::id() % span, |port| u32::from(port - low));
    for _ in 0..span {
        let port = low + (offset % span) as u16;
        offset += 1;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            *next = Some(low + (offset % span) as u16);
            return port;
        }
    }
    panic!("no free loopback port in {low}-{high}");
}

/// The ports [`free_port`] hands out: those under the kernel's ephemeral range down to 20000 (above the
/// well-known and registered services tests might meet, e.g. the actors' metrics at 9001-9099), else those above
/// it.
fn probe_range() -> (u16, u16) {
    const FLOOR: u16 = 20_000;
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok().and_then(|text| {
        let mut bounds = text.split_whitespace().map(|n| n.parse::<u16>().ok());
        Some((bounds.next()??, bounds.next()??))
    });
    match ephemeral {
        Some((first, _)) if first > FLOOR + 1_000 => (FLOOR, first - 1),
        Some((_, last)) if last < u16::MAX - 1_000 => (last + 1, u16::MAX),
        // No such file (not Linux) or a range that leaves little room: the ports below Linux's default range.
        _ => (FLOOR, 32_767),
    }
}

/// A child process whose stdout and stderr go to files; killed (SIGKILL) when dropped.
pub struct Proc {
    /// Name in messages and log file names.
    pub name: String,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    exit: Option<ExitStatus>,
}

impl Proc {
    /// Starts `bin` with `args` in the workspace root, stdout and stderr to `log_dir/<name>.stdout|stderr`, with
    /// `RUST_LOG=info`, no colours, no `PROXIMA_*` variable of the caller's environment and the `env` given.
    pub fn spawn(name: &str, bin: &Path, args: &[String], env: &[(&str, String)], log_dir: &Path) -> Self {
        let stdout = log_dir.join(format!("{name}.stdout"));
        let stderr = log_dir.join(format!("{name}.stderr"));
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .current_dir(crate::workspace_root())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("create stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("create stderr file"));
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

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// None while running, else how it ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().expect("poll child process");
        }
        self.exit
    }

    /// Sends `signal` (e.g. `TERM`) with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").args(["-s", signal, &self.pid().to_string()]).status().expect("run kill(1)");
        assert!(status.success(), "kill -s {signal} {} ({}) failed", self.pid(), self.name);
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            self.exit = self.child.wait().ok();
        }
    }

    /// Waits for the process to exit, calling `tick` every poll; panics with its log after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration, mut tick: impl FnMut()) -> ExitStatus {
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

    /// Waits until `ready` returns a value; panics with the log if the process exits first or after `timeout`.
    pub fn wait_for<T>(&mut self, what: &str, timeout: Duration, mut ready: impl FnMut(&Self) -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = ready(self) {
                return v;
            }
            if let Some(status) = self.exited() {
                panic!("{} exited ({status}) while waiting for {what}\n{}", self.name, self.tail(40));
            }
            assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}\n{}", self.tail(40));
            std::thread::sleep(POLL);
        }
    }

    /// Everything written to stderr (the log) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Everything written to stdout so far.
    pub fn stdout_text(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// The last `n` lines of stderr and all of stdout, for failure messages.
    pub fn tail(&self, n: usize) -> String {
        let tail = last_lines(&self.log(), n);
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

/// A `learner serve` process on loopback with `configs/cartpole.toml`, its run directory and metrics port.
pub struct Learner {
    /// The process.
    pub proc: Proc,
    /// `runs_dir/<run>`.
    pub run_dir: PathBuf,
    /// Port of its `/metrics` on 127.0.0.1.
    pub metrics_port: u16,
}

impl Learner {
    /// Starts `learner serve` for run `runs_dir/<run>` on 127.0.0.1:`port` with `-s` overrides (and `--resume`),
    /// metrics on a free loopback port, logs in `log_dir/<label>.*`.
    pub fn start(
        log_dir: &Path,
        label: &str,
        runs_dir: &Path,
        run: &str,
        port: u16,
        overrides: &[&str],
        resume: bool,
    ) -> Self {
        let config = crate::workspace_root().join("configs/cartpole.toml");
        let mut extra: Vec<String> = resume.then(|| "--resume".to_string()).into_iter().collect();
        for o in overrides {
            extra.extend(["-s".to_string(), o.to_string()]);
        }
        Self::with_config(log_dir, label, &config, runs_dir, run, port, &extra)
    }

    /// Starts `learner serve --config <config>` for run `runs_dir/<run>` on 127.0.0.1:`port` with `extra`
    /// arguments, metrics on a free loopback port, logs in `log_dir/<label>.*`.
    pub fn with_config(
        log_dir: &Path,
        label: &str,
        config: &Path,
        runs_dir: &Path,
        run: &str,
        port: u16,
        extra: &[String],
    ) -> Self {
        let mut args: Vec<String> =
            ["serve", "--config", &config.display().to_string(), "--listen"].iter().map(|s| s.to_string()).collect();
        args.extend([format!("127.0.0.1:{port}"), "--runs-dir".into(), runs_dir.display().to_string()]);
        args.extend(["--run-name".to_string(), run.to_string()]);
        args.extend(extra.iter().cloned());
        let metrics_port = free_port();
        // No dashboard unless the test asks for one (`--dashboard-addr` in `extra`).
        let env = [
            ("PROXIMA_METRICS_ADDR", format!("127.0.0.1:{metrics_port}")),
            ("PROXIMA_DASHBOARD_ADDR", "none".to_string()),
        ];
        let proc = Proc::spawn(label, &crate::bin_path("learner"), &args, &env, log_dir);
        Self { proc, run_dir: runs_dir.join(run), metrics_port }
    }

    /// The complete rows of the run's `progress.csv`.
    pub fn progress(&self) -> Vec<ProgressRow> {
        read_progress(&self.run_dir)
    }

    /// The learner's `/metrics` text, if it answers.
    pub fn metrics(&self) -> Option<String> {
        scrape(self.metrics_port)
    }

    /// The learner's `/metrics` text, asked again for up to 10 s while it does not answer (one slow answer on a
    /// loaded machine is no failure); panics if it never does or the learner exits.
    pub fn metrics_now(&mut self) -> String {
        let port = self.metrics_port;
        self.proc.wait_for("its /metrics to answer", Duration::from_secs(10), |_| scrape(port))
    }

    /// The run's `metrics.prom`: the learner's metrics as it wrote them once its server had stopped (exact totals,
    /// which the last scrape before the exit may miss). Panics when the file is missing.
    pub fn final_metrics(&self) -> String {
        let path = self.run_dir.join("metrics.prom");
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}\n{}", path.display(), self.proc.tail(20)))
    }

    /// The run's checkpoints, by version.
    pub fn checkpoints(&self) -> Vec<(u64, PathBuf)> {
        checkpoints(&self.run_dir.join("checkpoints"))
    }

    /// SIGTERM, then waits for the exit; returns how it ended.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        self.proc.signal("TERM");
        self.proc.wait_exit(timeout, || {})
    }
}

/// Starts an actor process (CartPole-v1, 8 envs unless `extra` says `--num-envs`, reconnect backoff at most 1 s,
/// no metrics) for the learner on 127.0.0.1:`port`, logs in `log_dir/<name>.*`; `extra` arguments appended.
pub fn start_actor(log_dir: &Path, name: &str, port: u16, extra: &[&str]) -> Proc {
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
    Proc::spawn(name, &crate::bin_path("actor"), &args, &[("PROXIMA_METRICS_ADDR", "none".into())], log_dir)
}

/// `GET /metrics` on 127.0.0.1:`port` (plain HTTP/1.1); the body, if it answered 200.
pub fn scrape(port: u16) -> Option<String> {
    http_get(port, "/metrics")
}

/// `GET path` on 127.0.0.1:`port` (plain HTTP/1.1, `Connection: close`); the body, if it answered 200.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    // Python's http.server (the Python actor's exporter) answers in HTTP/1.0.
    (head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200")).then(|| body.to_string())
}

pub fn samples<'a>(text: &'a str, name: &str) -> Vec<(&'a str, f64)> {
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

/// The sum of metric `name`'s samples over all labels (0 when absent).
pub fn total(text: &str, name: &str) -> f64 {
    samples(text, name).iter().map(|(_, v)| v).sum()
}

/// The `checkpoint-<version>.safetensors` files in `dir`, by version (none if `dir` is missing).
pub fn checkpoints(dir: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
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

/// The highest policy version of `rows` (none without rows).
pub fn max_version(rows: &[ProgressRow]) -> Option<u64> {
    rows.iter().map(|r| r.policy_version).max()
}

/// VmRSS of process `pid` in KiB (none once it is gone).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The first row of `rows` that is not one of `before`: after a restart with `--resume`, the first row the new
/// learner process wrote. (A resumed run keeps the rows up to its checkpoint and drops the later ones, so the new
/// rows are not simply those past `before.len()`.)
pub fn first_new_row(before: &[ProgressRow], rows: &[ProgressRow]) -> Option<ProgressRow> {
    let key = |r: &ProgressRow| (r.policy_version, r.env_steps, r.wall_seconds.to_bits());
    let old: std::collections::HashSet<_> = before.iter().map(key).collect();
    rows.iter().find(|r| !old.contains(&key(r))).cloned()
}

/// A command's outcome: exit success and its output.
pub struct Ran {
    /// It exited with status 0.
    pub ok: bool,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

/// Runs `cmd` to completion within `timeout` (killed after it), with stdout and stderr captured through files.
pub fn run_bounded(mut cmd: Command, timeout: Duration, scratch: &Path) -> Ran {
    let what = format!("{cmd:?}");
    let (out_path, err_path) = (scratch.join("cmd.stdout"), scratch.join("cmd.stderr"));
    let out = std::fs::File::create(&out_path).expect("create stdout file");
    let err = std::fs::File::create(&err_path).expect("create stderr file");
    let mut child =
        cmd.stdin(Stdio::null()).stdout(out).stderr(err).spawn().unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait().expect("wait for a child process") {
            Some(status) => break status,
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
                panic!("{what} did not finish within {timeout:?}\nstderr:\n{stderr}");
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    Ran {
        ok: status.success(),
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    }
}

/// The last `n` lines of `text`.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ports handed out are distinct, outside the kernel's ephemeral range, and free to listen on.
    #[test]
    fn free_ports_are_distinct_and_outside_the_ephemeral_range() {
        let (low, high) = probe_range();
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let distinct: std::collections::HashSet<_> = ports.iter().collect();
        assert_eq!(distinct.len(), ports.len(), "{ports:?}");
        let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
        let bounds: Vec<u16> = ephemeral.split_whitespace().filter_map(|n| n.parse().ok()).collect();
        for &port in &ports {
            assert!((low..=high).contains(&port), "{port} outside {low}-{high}");
            if let [first, last] = bounds[..] {
                assert!(!(first..=last).contains(&port), "{port} is in the ephemeral range {first}-{last}");
            }
            TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| panic!("{port}: {e}"));
        }
    }
}
