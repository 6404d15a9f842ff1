//! Observability: both `/metrics` endpoints pass `promtool check metrics`, every dashboard query names metrics the
//! binaries export and parses as PromQL, and a real Prometheus server on loopback scrapes a learner and actors.
//! Needs Debian's `prometheus` package (promtool and prometheus), which `scripts/test.sh` installs.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tests::procs::free_port;

/// Kills the child process when dropped, so a failing test leaves nothing behind.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http_get(url: &str) -> Option<String> {
    let out = Command::new("curl").args(["-sfg", "--max-time", "5", url]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> Option<String>) -> String {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn tool(name: &str) -> String {
    let path = format!("/usr/bin/{name}");
    assert!(Path::new(&path).exists(), "{path} missing: install Debian's prometheus package (scripts/test.sh does)");
    path
}

fn promtool_check_metrics(text: &str, what: &str) {
    let mut child = Command::new(tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write metrics");
    let out = child.wait_with_output().expect("promtool output");
    assert!(
        out.status.success(),
        "promtool check metrics failed for {what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Metric names (`proxima_*`) that a PromQL expression uses.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("proxima_") {
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

fn dashboard_exprs() -> Vec<String> {
    let path = tests::workspace_root().join("deploy/grafana/dashboards/proxima.json");
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("json");
    let mut exprs = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            exprs.push(target["expr"].as_str().expect("expr").to_string());
        }
    }
    exprs
}

#[test]
fn metrics_dashboard_and_prometheus() {
    let runs = tempfile::tempdir().expect("tempdir");
    let (grpc, learner_metrics) = (free_port(), free_port());
    let config = tests::workspace_root().join("configs/cartpole.toml");
    let _learner = Proc(
        Command::new(tests::bin_path("learner"))
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .args(["--listen", &format!("127.0.0.1:{grpc}"), "--metrics-addr", &format!("127.0.0.1:{learner_metrics}")])
            .arg("--runs-dir")
            .arg(runs.path())
            .args(["-s", "total_steps=100000000", "-s", "target_return=1000.0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start learner"),
    );
    let actor_ports = [free_port(), free_port()];
    let _actors: Vec<Proc> = actor_ports
        .iter()
        .map(|port| {
            Proc(
                Command::new(tests::bin_path("actor"))
                    .args(["--learner", &format!("http://127.0.0.1:{grpc}"), "--num-envs", "4"])
                    .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start actor"),
            )
        })
        .collect();

    // Both endpoints serve well-formed metrics once training has produced every series.
    let learner_url = format!("http://127.0.0.1:{learner_metrics}/metrics");
    let learner_text =
        wait_for("learner metrics with an update and a finished episode", Duration::from_secs(60), || {
            http_get(&learner_url).filter(|t| {
                t.contains("proxima_learner_approx_kl{") && t.contains("proxima_learner_episode_return_bucket")
            })
        });
    let actor_url = format!("http://127.0.0.1:{}/metrics", actor_ports[0]);
    let actor_text = wait_for("actor metrics", Duration::from_secs(30), || {
        http_get(&actor_url).filter(|t| t.contains("proxima_actor_weight_update_latency_seconds_bucket"))
    });
    promtool_check_metrics(&learner_text, "the learner");
    promtool_check_metrics(&actor_text, "an actor");

    // Every dashboard query names exported metrics and parses as PromQL.
    let exported = format!("{learner_text}\n{actor_text}");
    let exprs = dashboard_exprs();
    assert!(exprs.len() >= 20, "dashboard has only {} queries", exprs.len());
    for expr in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "query names no proxima metric: {expr}");
        for name in names {
            assert!(
                exported.contains(&format!("{name}{{")),
                "dashboard query uses {name}, which is not exported: {expr}"
            );
        }
    }
    let rules = runs.path().join("dashboard-rules.yml");
    let body: String = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| {
            format!("      - record: dashboard_query_{i}\n        expr: {}\n", serde_json::to_string(e).expect("quote"))
        })
        .collect();
    std::fs::write(&rules, format!("groups:\n  - name: dashboard\n    rules:\n{body}")).expect("write rules");
    let out = Command::new(tool("promtool")).args(["check", "rules"]).arg(&rules).output().expect("promtool rules");
    assert!(out.status.success(), "dashboard PromQL does not parse: {}", String::from_utf8_lossy(&out.stdout));
    println!("dashboard: {} queries, all name exported metrics and parse", exprs.len());

    // A real Prometheus scrapes the learner and both actors.
    let prom_port = free_port();
    let prom_cfg = runs.path().join("prometheus.yml");
    let actor_targets: Vec<String> = actor_ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    std::fs::write(
        &prom_cfg,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: learner\n    static_configs:\n      - targets: [\"127.0.0.1:{learner_metrics}\"]\n  - job_name: actor\n    static_configs:\n      - targets: [{}]\n",
            actor_targets.join(", ")
        ),
    )
    .expect("write prometheus config");
    let _prometheus = Proc(
        Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", prom_cfg.display()))
            .arg(format!("--storage.tsdb.path={}", runs.path().join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );
    let query = |q: &str| {
        let url = format!("http://127.0.0.1:{prom_port}/api/v1/query?query={}", q.replace(' ', "%20"));
        http_get(&url).and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok())
    };
    let up = wait_for("all three targets up in Prometheus", Duration::from_secs(60), || {
        let v = query("sum(up)")?;
        let n: f64 = v["data"]["result"][0]["value"][1].as_str()?.parse().ok()?;
        (n == 3.0).then(|| n.to_string())
    });
    let kl = wait_for("the approx KL series", Duration::from_secs(30), || {
        let v = query("proxima_learner_approx_kl")?;
        v["data"]["result"][0]["value"][1].as_str().map(str::to_string)
    });
    let rate = wait_for("a positive env-steps rate", Duration::from_secs(60), || {
        let v = query("sum(rate(proxima_learner_env_steps_total[10s]))")?;
        let r: f64 = v["data"]["result"][0]["value"][1].as_str()?.parse().ok()?;
        (r > 0.0).then(|| r.to_string())
    });
    println!("prometheus: {up} targets up, approx_kl = {kl}, env steps/s = {rate}");
}
