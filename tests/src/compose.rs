//! Helpers for the container tests (tests/tests/compose.rs, tests/tests/hosts.rs): compose projects run through
//! a wrapper script under deploy/test/ and taken down with their volumes when dropped, bounded commands and waits,
//! the learner's metrics and Prometheus' HTTP API.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

pub use crate::procs::{Ran, run_bounded};

/// How often the waits look.
pub const POLL: Duration = Duration::from_millis(200);

pub fn deploy_dir() -> PathBuf {
    crate::workspace_root().join("deploy")
}

/// A command with no PROXIMA_*, COMPOSE_* or other compose-file settings inherited from the caller's
/// environment: the test runs with the defaults of deploy/.env and the override file.
pub fn clean_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        let settings = [
            "PROXIMA_",
            "COMPOSE_",
            "PROMETHEUS_",
            "GRAFANA_",
            "ACTOR_REPLICAS",
            "PYTHON_ACTOR_REPLICAS",
            "PIP_EXTRAS",
        ];
        if settings.iter().any(|p| k.starts_with(p)) {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// The running compose project; `down -v --remove-orphans` when dropped.
pub struct Project {
    pub name: String,
    /// The compose wrapper script every compose command runs (deploy/test/compose.sh by default).
    pub script: PathBuf,
    /// Arguments before the compose arguments (`learner` for `hosts.sh learner ...`).
    pub script_args: Vec<String>,
    /// Settings for the compose file, set in the environment of every compose command.
    pub env: Vec<(String, String)>,
    /// Compose profiles every command of this project enables (`--profile P`).
    pub profiles: Vec<String>,
    pub scratch: tempfile::TempDir,
}

impl Project {
    /// A project named after this test process and `test` (tests of one process run in parallel, each with its own
    /// project), with the compose `profiles` on.
    pub fn new(test: &str, profiles: &[&str]) -> Self {
        let name = format!("proxima-test-{}-{test}", std::process::id());
        let profiles = profiles.iter().map(|p| p.to_string()).collect();
        let script = deploy_dir().join("test/compose.sh");
        let scratch = tempfile::tempdir().expect("temporary directory");
        Self { name, script, script_args: Vec::new(), env: Vec::new(), profiles, scratch }
    }

    /// A project named `name` run through the compose wrapper `script` (a path under deploy/) with `script_args`
    /// first, with `env` set for every compose command.
    pub fn with_script(name: &str, script: &str, script_args: &[&str], env: &[(&str, &str)]) -> Self {
        Self {
            name: name.to_string(),
            script: deploy_dir().join(script),
            script_args: script_args.iter().map(|a| a.to_string()).collect(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            profiles: Vec::new(),
            scratch: tempfile::tempdir().expect("temporary directory"),
        }
    }

    /// This project with every compose command run by compose `version`, `v1` (`docker-compose`) or `v2` (the
    /// `docker compose` plugin): deploy/test/compose-command.sh's `PROXIMA_COMPOSE`.
    pub fn with_compose(mut self, version: &str) -> Self {
        self.env.push(("PROXIMA_COMPOSE".into(), version.into()));
        self
    }

    /// `deploy/test/compose.sh ARGS` for this project; panics when it fails.
    pub fn compose(&self, args: &[&str], timeout: Duration) -> String {
        let ran = self.try_compose(args, timeout);
        assert!(ran.ok, "compose {} failed\nstdout:\n{}\nstderr:\n{}", args.join(" "), ran.stdout, ran.stderr);
        ran.stdout
    }

    pub fn try_compose(&self, args: &[&str], timeout: Duration) -> Ran {
        let mut cmd = clean_command(&self.script);
        cmd.args(&self.script_args);
        for profile in &self.profiles {
            cmd.args(["--profile", profile]);
        }
        cmd.args(args).env("COMPOSE_PROJECT_NAME", &self.name).current_dir(deploy_dir());
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        run_bounded(cmd, timeout, self.scratch.path())
    }

    /// `docker ARGS`; panics when it fails.
    pub fn docker(&self, args: &[&str], timeout: Duration) -> String {
        let ran = self.try_docker(args, timeout);
        assert!(ran.ok, "docker {} failed\nstdout:\n{}\nstderr:\n{}", args.join(" "), ran.stdout, ran.stderr);
        ran.stdout
    }

    pub fn try_docker(&self, args: &[&str], timeout: Duration) -> Ran {
        let mut cmd = clean_command("docker");
        cmd.args(args);
        run_bounded(cmd, timeout, self.scratch.path())
    }

    /// Container ids of `service`, sorted.
    pub fn containers(&self, service: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .compose(&["ps", "-q", service], Duration::from_secs(60))
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        ids.sort();
        ids
    }

    pub fn learner(&self) -> String {
        let ids = self.containers("learner");
        assert_eq!(ids.len(), 1, "expected one learner container, got {ids:?}");
        ids[0].clone()
    }

    /// The host address a container's port is published on (`127.0.0.1:N`), if it is running.
    pub fn published(&self, container: &str, port: &str) -> Option<String> {
        self.published_on(container, port, "127.0.0.1")
    }

    /// The address a container's port is published on at host address `ip` (`IP:N`), if it is running.
    pub fn published_on(&self, container: &str, port: &str, ip: &str) -> Option<String> {
        let ran = self.try_docker(&["port", container, port], Duration::from_secs(30));
        let prefix = format!("{ip}:");
        ran.stdout.lines().map(str::trim).find(|l| l.starts_with(&prefix)).map(str::to_string)
    }

    /// Panics unless a Docker daemon answers.
    pub fn require_docker(&self) {
        let info = self.try_docker(&["info", "--format", "{{.ServerVersion}}"], Duration::from_secs(30));
        assert!(info.ok, "this test needs a running Docker daemon (`docker info` failed): {}", info.stderr);
    }

    /// Builds the test images with deploy/test/build-images.sh from the binaries of this test's profile and the
    /// test Python, once per test process: later calls, concurrent ones too, wait for the first and use its
    /// images (so the 600 s bound is the build's own, not a wait behind another test's build plus its own). The
    /// script is a no-op when nothing changed since an earlier process built them.
    pub fn build_images(&self) {
        static BUILT: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
        let mut built = BUILT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if *built {
            return;
        }
        let learner_bin = crate::bin_path("learner");
        crate::bin_path("actor");
        let bin_dir = learner_bin.parent().expect("binary directory").to_path_buf();
        let mut build = clean_command(deploy_dir().join("test/build-images.sh"));
        let work = bin_dir.parent().unwrap_or(&bin_dir).join("docker-test-images");
        build
            .env("PROXIMA_BIN_DIR", &bin_dir)
            .env("PROXIMA_IMAGE_WORK", work)
            .env("PROXIMA_PYTHON", crate::python())
            .current_dir(crate::workspace_root());
        let ran = run_bounded(build, Duration::from_secs(600), self.scratch.path());
        assert!(ran.ok, "deploy/test/build-images.sh failed\n{}\n{}", ran.stdout, ran.stderr);
        *built = true;
    }

    /// The compose network of a container and its IP address on it.
    pub fn network_of(&self, container: &str) -> (String, String) {
        let out = self.docker(
            &[
                "inspect",
                "-f",
                "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{$v.IPAddress}}\n{{end}}",
                container,
            ],
            Duration::from_secs(30),
        );
        let nets: Vec<(String, String)> = out
            .lines()
            .filter_map(|l| l.split_once(' ').map(|(n, ip)| (n.to_string(), ip.trim().to_string())))
            .filter(|(n, _)| n.starts_with(&format!("{}_", self.name)))
            .collect();
        assert_eq!(nets.len(), 1, "expected one compose network for {container}: {out}");
        nets[0].clone()
    }

    /// The metrics addresses (`IP:9001` on the compose network) of the containers of `service`, sorted.
    pub fn metrics_targets(&self, service: &str) -> Vec<String> {
        let mut targets: Vec<String> =
            self.containers(service).iter().map(|id| format!("{}:9001", self.network_of(id).1)).collect();
        targets.sort();
        targets
    }

    /// The host address of the Prometheus container's published port 9090.
    pub fn prometheus_addr(&self) -> String {
        let prometheus = self.containers("prometheus");
        assert_eq!(prometheus.len(), 1, "one prometheus container");
        self.published(&prometheus[0], "9090/tcp").expect("published Prometheus port")
    }

    /// The sizes of the test images, one `name:tag<TAB>size` line each.
    pub fn image_sizes(&self) -> String {
        let sizes = self.docker(
            &["image", "ls", "--format", "{{.Repository}}:{{.Tag}}\t{{.Size}}", "--filter", "reference=proxima-*:test"],
            Duration::from_secs(30),
        );
        sizes.trim_end().to_string()
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.try_compose(&["logs", "--no-color", "--tail", "30"], Duration::from_secs(60));
            eprintln!("== compose logs (last 30 lines per container)\n{}{}", logs.stdout, logs.stderr);
        }
        let down = self.try_compose(&["down", "-v", "--remove-orphans", "-t", "10"], Duration::from_secs(180));
        if !down.ok {
            eprintln!("compose down of {} failed:\n{}{}", self.name, down.stdout, down.stderr);
        }
    }
}

/// `GET path` over HTTP/1.0 (no chunked answers); the body of a 200 answer.
pub fn http_get(addr: &str, path: &str) -> Option<String> {
    let addr: std::net::SocketAddr = addr.parse().ok()?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    stream.set_write_timeout(Some(Duration::from_secs(3))).ok()?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?;
    (status == "200").then(|| body.to_string())
}

/// The value of the unique sample of metric `name` in Prometheus text.
pub fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            return None;
        }
        line.rsplit(' ').next()?.trim().parse().ok()
    })
}

/// What the learner's `/metrics` says now.
#[derive(Debug, Clone, Copy)]
pub struct LearnerState {
    pub connected: u64,
    pub version: Option<u64>,
}

pub fn learner_state(metrics_addr: &str) -> Option<LearnerState> {
    let text = http_get(metrics_addr, "/metrics")?;
    let connected = gauge(&text, "proxima_learner_connected_actors").unwrap_or(0.0) as u64;
    let version = gauge(&text, "proxima_learner_policy_version").map(|v| v as u64);
    Some(LearnerState { connected, version })
}

/// Calls `check` every [`POLL`] until it returns `Ok`, for at most `timeout`; panics with its last `Err`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(v) => return v,
            Err(last) if Instant::now() >= deadline => panic!("timed out after {timeout:?} waiting for {what}: {last}"),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// Tracks the learner container's published metrics port (it changes when the container restarts).
pub struct Learner<'a> {
    pub project: &'a Project,
    pub id: String,
    pub metrics: Option<String>,
}

impl Learner<'_> {
    pub fn state(&mut self) -> Option<LearnerState> {
        if let Some(addr) = &self.metrics
            && let Some(s) = learner_state(addr)
        {
            return Some(s);
        }
        self.metrics = self.project.published(&self.id, "9000/tcp");
        learner_state(self.metrics.as_deref()?)
    }

    /// The learner's state now; a scrape that fails (a slow answer on a loaded machine) is retried for up to 10 s.
    pub fn current_state(&mut self) -> LearnerState {
        wait_for("the learner's metrics", Duration::from_secs(10), || {
            self.state().ok_or_else(|| "no answer".to_string())
        })
    }

    /// Waits until the learner's log (`docker logs`: every start of its container) says it resumed from a
    /// checkpoint; returns the version of the last such line.
    pub fn wait_resumed(&self, timeout: Duration) -> u64 {
        wait_for("the learner to resume", timeout, || {
            let ran = self.project.try_docker(&["logs", &self.id], Duration::from_secs(30));
            resumed_version(&format!("{}{}", ran.stdout, ran.stderr))
                .ok_or_else(|| "no `resumed` line in the learner's log yet".to_string())
        })
    }

    /// Waits until `connected` actors have open policy streams.
    pub fn wait_connected(&mut self, connected: u64, timeout: Duration) -> LearnerState {
        wait_for(&format!("{connected} connected actors"), timeout, || match self.state() {
            Some(s) if s.connected == connected => Ok(s),
            other => Err(format!("learner metrics: {other:?}")),
        })
    }

    /// Waits until the policy version is above `above`; returns it.
    pub fn wait_version_above(&mut self, above: u64, timeout: Duration) -> u64 {
        wait_for(&format!("a policy version above {above}"), timeout, || match self.state() {
            Some(LearnerState { version: Some(v), .. }) if v > above => Ok(v),
            other => Err(format!("learner metrics: {other:?}")),
        })
    }
}

/// Removes ANSI colour sequences (the services log in colour).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The version in the learner's log of its last resume (the `resumed` line), if any.
pub fn resumed_version(log: &str) -> Option<u64> {
    last_version(log, " resumed ")
}

/// The version of the last checkpoint the learner's log says it wrote (`checkpoint written`), if any.
pub fn last_checkpoint_version(log: &str) -> Option<u64> {
    last_version(log, "checkpoint written")
}

/// The `version=` field of the last line of `log` that contains `message` (colours stripped).
fn last_version(log: &str, message: &str) -> Option<u64> {
    let log = strip_ansi(log);
    let line = log.lines().rev().find(|l| l.contains(message))?;
    let rest = &line[line.find(" version=")? + " version=".len()..];
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// One series of a Prometheus query's answer: its labels and value.
pub struct Sample {
    pub labels: serde_json::Value,
    pub value: f64,
}

impl Sample {
    /// The value of label `name` (empty when the series has none).
    pub fn label(&self, name: &str) -> String {
        self.labels[name].as_str().unwrap_or_default().to_string()
    }
}

/// The series of the instant query `promql` through Prometheus' HTTP API at `addr`.
pub fn prometheus_query(addr: &str, promql: &str) -> Result<Vec<Sample>, String> {
    let query: String = promql
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"_.-".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let body = http_get(addr, &format!("/api/v1/query?query={query}")).ok_or("no answer from Prometheus")?;
    let json: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("bad JSON {body}: {e}"))?;
    let result = json["data"]["result"].as_array().ok_or(format!("no result in {body}"))?;
    Ok(result
        .iter()
        .map(|r| Sample {
            labels: r["metric"].clone(),
            value: r["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN),
        })
        .collect())
}

/// The `up` series of Prometheus by job: (job, instance, value).
pub fn prometheus_up(addr: &str) -> Result<Vec<(String, String, f64)>, String> {
    Ok(prometheus_query(addr, "up")?.into_iter().map(|s| (s.label("job"), s.label("instance"), s.value)).collect())
}

pub fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Prints `[elapsed] message` lines, the elapsed time counted from `started`.
pub fn progress(started: Instant) -> impl Fn(&str) {
    move |msg| eprintln!("[{:6.1} s] {msg}", started.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_the_learner_log() {
        let log = "INFO learner::run::checkpoint: checkpoint written path=/data/main/checkpoints/c-5.safetensors \
                   version=5\n\x1b[32m INFO\x1b[0m checkpoint written path=/data/c-160.safetensors \
                   \x1b[3mversion\x1b[0m\x1b[2m=\x1b[0m160\nINFO learner::session: resumed path=/data/c-160 \
                   version=160 env_steps=40960\nINFO learner::server: learner shutting down\n";
        assert_eq!(last_checkpoint_version(log), Some(160));
        assert_eq!(resumed_version(log), Some(160));
        assert_eq!(resumed_version("INFO no checkpoint to resume from; starting a fresh run"), None);
        assert_eq!(last_checkpoint_version("INFO learner stopped"), None);
    }
}
