//! End-to-end tests of the container deployment (deploy/docker-compose.yml with deploy/test/docker-compose.test.yml
//! on top): locally built scratch images (deploy/test/build-images.sh), a learner, scaled actors and Prometheus on
//! a compose network. Needs Docker and compose (the v2 plugin or docker-compose v1.28+), `prometheus` on the host
//! (Debian: `apt-get install prometheus`) to package into the Prometheus test image, and the test Python
//! (`PROXIMA_PYTHON`, see `tests::python`) with pip and access to its package index (or a cache) for the Python
//! actor image.
//!
//! The Rust actors' test runs sequentially to keep the time down: start with 3 actors, scale to 5 and to 2, kill
//! and restart the learner (it resumes from its volume, the actors reconnect), cut one actor off the network and
//! plug it back (the learner notices the silent peer through HTTP/2 keepalive; the actor rejoins), and check that
//! Prometheus scrapes the learner and every actor. The Python actors' test runs the `python` profile instead of
//! the Rust actors: two Python actors train, and Prometheus scrapes their env steps. Every step is bounded in
//! time; each test has its own compose project, taken down with its volumes when the guard drops, also when the
//! test fails. Both print their timings and the image sizes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `server.checkpoint_every` of the test override (deploy/test/docker-compose.test.yml).
const CHECKPOINT_EVERY: u64 = 5;
/// How often the waits look.
const POLL: Duration = Duration::from_millis(200);

fn deploy_dir() -> PathBuf {
    tests::workspace_root().join("deploy")
}

/// A command's outcome: exit success and its output.
struct Ran {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` to completion within `timeout` (killed after it), with stdout and stderr captured through files.
fn run_bounded(mut cmd: Command, timeout: Duration, scratch: &Path) -> Ran {
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

/// A command with no PROXIMA_*, COMPOSE_* or other compose-file settings inherited from the caller's
/// environment: the test runs with the defaults of deploy/.env and the override file.
fn clean_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
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
struct Project {
    name: String,
    /// Compose profiles every command of this project enables (`--profile P`).
    profiles: Vec<String>,
    scratch: tempfile::TempDir,
}

impl Project {
    /// A project named after this test process and `test` (tests of one process run in parallel, each with its own
    /// project), with the compose `profiles` on.
    fn new(test: &str, profiles: &[&str]) -> Self {
        let name = format!("proxima-test-{}-{test}", std::process::id());
        let profiles = profiles.iter().map(|p| p.to_string()).collect();
        Self { name, profiles, scratch: tempfile::tempdir().expect("temporary directory") }
    }

    /// `deploy/test/compose.sh ARGS` for this project; panics when it fails.
    fn compose(&self, args: &[&str], timeout: Duration) -> String {
        let ran = self.try_compose(args, timeout);
        assert!(ran.ok, "compose {} failed\nstdout:\n{}\nstderr:\n{}", args.join(" "), ran.stdout, ran.stderr);
        ran.stdout
    }

    fn try_compose(&self, args: &[&str], timeout: Duration) -> Ran {
        let mut cmd = clean_command(deploy_dir().join("test/compose.sh"));
        for profile in &self.profiles {
            cmd.args(["--profile", profile]);
        }
        cmd.args(args).env("COMPOSE_PROJECT_NAME", &self.name).current_dir(deploy_dir());
        run_bounded(cmd, timeout, self.scratch.path())
    }

    /// `docker ARGS`; panics when it fails.
    fn docker(&self, args: &[&str], timeout: Duration) -> String {
        let ran = self.try_docker(args, timeout);
        assert!(ran.ok, "docker {} failed\nstdout:\n{}\nstderr:\n{}", args.join(" "), ran.stdout, ran.stderr);
        ran.stdout
    }

    fn try_docker(&self, args: &[&str], timeout: Duration) -> Ran {
        let mut cmd = clean_command("docker");
        cmd.args(args);
        run_bounded(cmd, timeout, self.scratch.path())
    }

    /// Container ids of `service`, sorted.
    fn containers(&self, service: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .compose(&["ps", "-q", service], Duration::from_secs(60))
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        ids.sort();
        ids
    }

    fn learner(&self) -> String {
        let ids = self.containers("learner");
        assert_eq!(ids.len(), 1, "expected one learner container, got {ids:?}");
        ids[0].clone()
    }

    /// The host address a container's port is published on (`127.0.0.1:N`), if it is running.
    fn published(&self, container: &str, port: &str) -> Option<String> {
        let ran = self.try_docker(&["port", container, port], Duration::from_secs(30));
        ran.stdout.lines().map(str::trim).find(|l| l.starts_with("127.0.0.1:")).map(str::to_string)
    }

    /// Panics unless a Docker daemon answers.
    fn require_docker(&self) {
        let info = self.try_docker(&["info", "--format", "{{.ServerVersion}}"], Duration::from_secs(30));
        assert!(info.ok, "this test needs a running Docker daemon (`docker info` failed): {}", info.stderr);
    }

    /// Builds the test images with deploy/test/build-images.sh from the binaries of this test's profile and the
    /// test Python (a no-op when nothing changed; concurrent calls wait for each other).
    fn build_images(&self) {
        let learner_bin = tests::bin_path("learner");
        tests::bin_path("actor");
        let bin_dir = learner_bin.parent().expect("binary directory").to_path_buf();
        let mut build = clean_command(deploy_dir().join("test/build-images.sh"));
        let work = bin_dir.parent().unwrap_or(&bin_dir).join("docker-test-images");
        build
            .env("PROXIMA_BIN_DIR", &bin_dir)
            .env("PROXIMA_IMAGE_WORK", work)
            .env("PROXIMA_PYTHON", tests::python())
            .current_dir(tests::workspace_root());
        let built = run_bounded(build, Duration::from_secs(600), self.scratch.path());
        assert!(built.ok, "deploy/test/build-images.sh failed\n{}\n{}", built.stdout, built.stderr);
    }

    /// The compose network of a container and its IP address on it.
    fn network_of(&self, container: &str) -> (String, String) {
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
    fn metrics_targets(&self, service: &str) -> Vec<String> {
        let mut targets: Vec<String> =
            self.containers(service).iter().map(|id| format!("{}:9001", self.network_of(id).1)).collect();
        targets.sort();
        targets
    }

    /// The host address of the Prometheus container's published port 9090.
    fn prometheus_addr(&self) -> String {
        let prometheus = self.containers("prometheus");
        assert_eq!(prometheus.len(), 1, "one prometheus container");
        self.published(&prometheus[0], "9090/tcp").expect("published Prometheus port")
    }

    /// The sizes of the test images, one `name:tag<TAB>size` line each.
    fn image_sizes(&self) -> String {
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
fn http_get(addr: &str, path: &str) -> Option<String> {
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
fn gauge(text: &str, name: &str) -> Option<f64> {
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
struct LearnerState {
    connected: u64,
    version: Option<u64>,
}

fn learner_state(metrics_addr: &str) -> Option<LearnerState> {
    let text = http_get(metrics_addr, "/metrics")?;
    let connected = gauge(&text, "proxima_learner_connected_actors").unwrap_or(0.0) as u64;
    let version = gauge(&text, "proxima_learner_policy_version").map(|v| v as u64);
    Some(LearnerState { connected, version })
}

/// Calls `check` every [`POLL`] until it returns `Ok`, for at most `timeout`; panics with its last `Err`.
fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
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
struct Learner<'a> {
    project: &'a Project,
    id: String,
    metrics: Option<String>,
}

impl Learner<'_> {
    fn state(&mut self) -> Option<LearnerState> {
        if let Some(addr) = &self.metrics
            && let Some(s) = learner_state(addr)
        {
            return Some(s);
        }
        self.metrics = self.project.published(&self.id, "9000/tcp");
        learner_state(self.metrics.as_deref()?)
    }

    /// Waits until `connected` actors have open policy streams.
    fn wait_connected(&mut self, connected: u64, timeout: Duration) -> LearnerState {
        wait_for(&format!("{connected} connected actors"), timeout, || match self.state() {
            Some(s) if s.connected == connected => Ok(s),
            other => Err(format!("learner metrics: {other:?}")),
        })
    }

    /// Waits until the policy version is above `above`; returns it.
    fn wait_version_above(&mut self, above: u64, timeout: Duration) -> u64 {
        wait_for(&format!("a policy version above {above}"), timeout, || match self.state() {
            Some(LearnerState { version: Some(v), .. }) if v > above => Ok(v),
            other => Err(format!("learner metrics: {other:?}")),
        })
    }
}

/// Removes ANSI colour sequences (the services log in colour).
fn strip_ansi(s: &str) -> String {
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

/// The version of the last `resumed` line of the learner's log.
fn resumed_version(log: &str) -> Option<u64> {
    let log = strip_ansi(log);
    let line = log.lines().rev().find(|l| l.contains(" resumed "))?;
    let rest = &line[line.find(" version=")? + " version=".len()..];
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// One series of a Prometheus query's answer: its labels and value.
struct Sample {
    labels: serde_json::Value,
    value: f64,
}

impl Sample {
    /// The value of label `name` (empty when the series has none).
    fn label(&self, name: &str) -> String {
        self.labels[name].as_str().unwrap_or_default().to_string()
    }
}

/// The series of the instant query `promql` through Prometheus' HTTP API at `addr`.
fn prometheus_query(addr: &str, promql: &str) -> Result<Vec<Sample>, String> {
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
fn prometheus_up(addr: &str) -> Result<Vec<(String, String, f64)>, String> {
    Ok(prometheus_query(addr, "up")?.into_iter().map(|s| (s.label("job"), s.label("instance"), s.value)).collect())
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Prints `[elapsed] message` lines, the elapsed time counted from `started`.
fn progress(started: Instant) -> impl Fn(&str) {
    move |msg| eprintln!("[{:6.1} s] {msg}", started.elapsed().as_secs_f64())
}

#[test]
fn compose_deployment_scales_recovers_and_is_scraped() {
    let started = Instant::now();
    let step = progress(started);
    let project = Project::new("rust", &[]);
    project.require_docker();
    step("building the test images");
    project.build_images();

    // 3 actors: all connect, the policy advances.
    step("compose up with 3 actors");
    let up_at = Instant::now();
    project.compose(&["up", "-d", "--no-build", "--scale", "actor=3"], Duration::from_secs(180));
    let mut learner = Learner { project: &project, id: project.learner(), metrics: None };
    let first_version = learner.wait_version_above(0, Duration::from_secs(120));
    let first_update = up_at.elapsed();
    step(&format!("first policy update (v{first_version}) {} after `up`", secs(first_update)));
    learner.wait_connected(3, Duration::from_secs(60));
    let v = learner.wait_version_above(first_version, Duration::from_secs(60));
    step(&format!("3 actors connected, policy at v{v}"));

    // Scale out and in.
    project.compose(&["up", "-d", "--no-build", "--scale", "actor=5"], Duration::from_secs(180));
    learner.wait_connected(5, Duration::from_secs(90));
    step("scaled to 5: 5 actors connected");
    project.compose(&["up", "-d", "--no-build", "--scale", "actor=2"], Duration::from_secs(180));
    learner.wait_connected(2, Duration::from_secs(90));
    assert_eq!(project.containers("actor").len(), 2, "scaled to 2 actor containers");
    step("scaled to 2: 2 actors connected");

    // Kill the learner (SIGKILL, no final checkpoint) and start it again: it resumes from the volume's newest
    // checkpoint, and both actors reconnect by themselves.
    let before = learner.wait_version_above(0, Duration::from_secs(30));
    project.docker(&["kill", &learner.id], Duration::from_secs(60));
    let killed_at = Instant::now();
    wait_for("the killed learner to stop", Duration::from_secs(60), || {
        let state = project.docker(&["inspect", "-f", "{{.State.Running}}", &learner.id], Duration::from_secs(30));
        if state.trim() == "false" { Ok(()) } else { Err(format!("running: {}", state.trim())) }
    });
    step(&format!("learner killed at v{before}; starting it again"));
    learner.metrics = None;
    project.docker(&["start", &learner.id], Duration::from_secs(60));
    let log = wait_for("the restarted learner to resume", Duration::from_secs(60), || {
        let ran = project.try_docker(&["logs", &learner.id], Duration::from_secs(30));
        let log = format!("{}{}", ran.stdout, ran.stderr);
        resumed_version(&log).map(|_| log).ok_or_else(|| "no `resumed` line in the learner's log yet".to_string())
    });
    let resumed = resumed_version(&log).expect("resumed version");
    assert!(resumed > 0, "the restarted learner started from scratch");
    assert!(
        resumed + CHECKPOINT_EVERY >= before,
        "resumed at v{resumed}, but v{before} was published before the kill and checkpoints come every \
         {CHECKPOINT_EVERY} updates"
    );
    let after = learner.wait_version_above(resumed, Duration::from_secs(120));
    learner.wait_connected(2, Duration::from_secs(120));
    let recovery = killed_at.elapsed();
    step(&format!(
        "learner resumed at v{resumed} (v{before} before the kill), trains on (v{after}), 2 actors reconnected: \
         recovered {} after the kill",
        secs(recovery)
    ));

    // Cut one actor off the network for at least 20 s: the learner notices the silent peer (HTTP/2 keepalive)
    // and drops its stream; plugged back in, the actor registers again.
    let actors = project.containers("actor");
    let cut = actors[0].clone();
    let (network, _) = project.network_of(&cut);
    project.docker(&["network", "disconnect", &network, &cut], Duration::from_secs(60));
    let cut_at = Instant::now();
    step(&format!("actor {} disconnected from {network}", &cut[..12]));
    wait_for(
        "the learner to drop the cut-off actor (HTTP/2 keepalive on the server side)",
        Duration::from_secs(60),
        || match learner.state() {
            Some(s) if s.connected == 1 => Ok(()),
            other => Err(format!("learner metrics: {other:?}")),
        },
    );
    let detected = cut_at.elapsed();
    step(&format!("the learner dropped the silent actor {} after the cut", secs(detected)));
    if let Some(rest) = Duration::from_secs(20).checked_sub(cut_at.elapsed()) {
        std::thread::sleep(rest);
    }
    let still = learner.state().map(|s| s.connected);
    assert_eq!(still, Some(1), "one actor connected while the other is cut off");
    project.docker(&["network", "connect", "--alias", "actor", &network, &cut], Duration::from_secs(60));
    let reconnected_at = Instant::now();
    learner.wait_connected(2, Duration::from_secs(60));
    let rejoin = reconnected_at.elapsed();
    step(&format!(
        "the actor rejoined {} after reconnecting the network (cut for {})",
        secs(rejoin),
        secs(reconnected_at - cut_at)
    ));

    // Prometheus scrapes the learner and exactly the two running actors (found through the service's DNS name).
    let addr = project.prometheus_addr();
    let want = project.metrics_targets("actor");
    let targets = wait_for("Prometheus to scrape the learner and both actors", Duration::from_secs(90), || {
        let up = prometheus_up(&addr)?;
        let learner_up = up.iter().any(|(job, inst, v)| job == "learner" && inst == "learner:9000" && *v == 1.0);
        let mut actors_up: Vec<String> =
            up.iter().filter(|(job, _, v)| job == "actor" && *v == 1.0).map(|(_, inst, _)| inst.clone()).collect();
        actors_up.sort();
        if learner_up && actors_up == want { Ok(up) } else { Err(format!("up: {up:?}; want actors {want:?}")) }
    });
    step(&format!("Prometheus targets up: {targets:?}"));

    let sizes = project.image_sizes();
    eprintln!("== compose test timings");
    eprintln!("time to first policy update after `up` (3 actors): {}", secs(first_update));
    eprintln!("recovery after killing the learner (resumed v{resumed}, 2 actors connected): {}", secs(recovery));
    eprintln!("silent actor dropped by the learner after the network cut: {}", secs(detected));
    eprintln!("actor rejoin after the network came back: {}", secs(rejoin));
    eprintln!("total test time: {}", secs(started.elapsed()));
    eprintln!("== test images\n{sizes}");
}

#[test]
fn python_actors_join_a_compose_deployment() {
    let started = Instant::now();
    let step = progress(started);
    let project = Project::new("python", &["python"]);
    project.require_docker();
    step("building the test images");
    project.build_images();

    // The `python` profile with two Python actors and no Rust one: both connect, the policy advances.
    step("compose up with 2 Python actors and no Rust actor");
    let up_at = Instant::now();
    project.compose(
        &["up", "-d", "--no-build", "--scale", "actor=0", "--scale", "actor-python=2"],
        Duration::from_secs(180),
    );
    assert_eq!(project.containers("actor"), Vec::<String>::new(), "no Rust actor container");
    assert_eq!(project.containers("actor-python").len(), 2, "two Python actor containers");
    let mut learner = Learner { project: &project, id: project.learner(), metrics: None };
    learner.wait_connected(2, Duration::from_secs(120));
    let connected = up_at.elapsed();
    step(&format!("2 Python actors connected {} after `up`", secs(connected)));
    let first_version = learner.wait_version_above(0, Duration::from_secs(120));
    let later_version = learner.wait_version_above(first_version, Duration::from_secs(60));
    let trains = up_at.elapsed();
    step(&format!("the policy advances: v{first_version}, then v{later_version}"));

    // Prometheus finds both through the `actor-python` DNS name (job `actor`) and has their env steps.
    let addr = project.prometheus_addr();
    let want = project.metrics_targets("actor-python");
    let scraped = wait_for("Prometheus to scrape env steps from both Python actors", Duration::from_secs(90), || {
        let samples = prometheus_query(&addr, "proxima_actor_env_steps_total")?;
        let mut stepping: Vec<(String, f64)> = samples
            .iter()
            .filter(|s| s.label("job") == "actor" && s.value > 0.0)
            .map(|s| (s.label("instance"), s.value))
            .collect();
        stepping.sort_by(|a, b| a.0.cmp(&b.0));
        let instances: Vec<String> = stepping.iter().map(|(instance, _)| instance.clone()).collect();
        if instances == want {
            Ok(stepping)
        } else {
            Err(format!("env steps by instance: {stepping:?}; want {want:?}"))
        }
    });
    step(&format!("Prometheus has env steps of both Python actors: {scraped:?}"));

    let sizes = project.image_sizes();
    eprintln!("== compose test timings (Python actors)");
    eprintln!("2 Python actors connected after `up`: {}", secs(connected));
    eprintln!("policy advancing (v{later_version}) after `up`: {}", secs(trains));
    eprintln!("total test time: {}", secs(started.elapsed()));
    eprintln!("== test images\n{sizes}");
}
