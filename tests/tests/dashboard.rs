//! The live dashboard in a real browser: headless Chromium (Debian's `chromium`) loads the page of a `learner
//! serve` with two actors while it trains, and the numbers the page shows are checked against `progress.csv`,
//! `/metrics` and the JSON the page polls (`/api/state`). A screenshot is written to
//! `target/test-artifacts/dashboard.png`.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tests::procs::{Learner, free_port, http_get, samples, start_actor};

/// The browser: `PROXIMA_CHROMIUM`, else `chromium` on the PATH (scripts/test.sh installs Debian's package).
fn chromium() -> PathBuf {
    std::env::var_os("PROXIMA_CHROMIUM").map_or_else(|| PathBuf::from("chromium"), PathBuf::from)
}

/// Runs headless Chromium on `url` with `extra` arguments (bounded in time); its stdout.
fn browse(url: &str, extra: &[&str], profile: &Path) -> String {
    let mut cmd = Command::new("timeout");
    cmd.args(["60", &chromium().display().to_string()])
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"])
        .arg(format!("--user-data-dir={}", profile.display()))
        // Lets the page's timers and fetches run for 4 s of virtual time before the DOM is dumped or shot.
        .arg("--virtual-time-budget=4000")
        .args(extra)
        .arg(url);
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {}: {e}", chromium().display()));
    assert!(out.status.success(), "chromium failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of attribute `attr` on the element whose opening tag contains `marker` (e.g. `id="stat-version"`).
fn attribute(dom: &str, marker: &str, attr: &str) -> Option<String> {
    let at = dom.find(marker)?;
    let start = dom[..at].rfind('<')?;
    let end = at + dom[at..].find('>')?;
    let tag = &dom[start..end];
    let key = format!("{attr}=\"");
    let from = tag.find(&key)? + key.len();
    Some(tag[from..from + tag[from..].find('"')?].to_string())
}

fn number(dom: &str, marker: &str, attr: &str) -> f64 {
    let text = attribute(dom, marker, attr).unwrap_or_else(|| panic!("no {attr} on {marker} in the page:\n{dom}"));
    text.parse().unwrap_or_else(|e| panic!("{marker} {attr}={text:?}: {e}"))
}

#[test]
fn the_dashboard_shows_a_distributed_run_in_a_browser() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (port, dash) = (free_port(), free_port());
    let overrides = ["total_steps=2000000", "target_return=inf", "actors.count=2"];
    let mut extra: Vec<String> = vec!["--dashboard-addr".into(), format!("127.0.0.1:{dash}")];
    for o in overrides {
        extra.extend(["-s".to_string(), o.to_string()]);
    }
    let config = tests::workspace_root().join("configs/cartpole.toml");
    let mut learner =
        Learner::with_config(dir.path(), "learner", &config, &dir.path().join("runs"), "dash", port, &extra);
    let _a = start_actor(dir.path(), "actor-a", port, &[]);
    let _b = start_actor(dir.path(), "actor-b", port, &[]);
    let run_dir = learner.run_dir.clone();
    learner.proc.wait_for("20k env steps", Duration::from_secs(120), |_| {
        tests::read_progress(&run_dir).last().map(|r| r.env_steps).filter(|s| *s >= 20_000)
    });
    let url = format!("http://127.0.0.1:{dash}/");
    let profile = dir.path().join("chromium");

    // The page, as the browser built it after its script ran: two loads, the numbers move.
    let before = tests::read_progress(&run_dir).last().cloned().expect("progress rows");
    let metrics_before = learner.metrics_now();
    let first = browse(&url, &["--dump-dom"], &profile);
    assert_eq!(attribute(&first, "<body", "data-ready").as_deref(), Some("1"), "the page never got its data:\n{first}");
    let steps_1 = number(&first, "id=\"stat-env-steps\"", "data-value");
    let version_1 = number(&first, "id=\"stat-version\"", "data-value");
    // The second load once the run has gone on past what the first one showed.
    learner.proc.wait_for("an update after the first load", Duration::from_secs(60), |_| {
        let last = tests::read_progress(&run_dir).last().cloned();
        last.filter(|r| r.policy_version as f64 > version_1 && r.env_steps as f64 > steps_1)
    });
    let second = browse(&url, &["--dump-dom"], &profile);
    let after = tests::read_progress(&run_dir).last().cloned().expect("progress rows");
    let metrics_after = learner.metrics_now();
    let steps_2 = number(&second, "id=\"stat-env-steps\"", "data-value");
    let version_2 = number(&second, "id=\"stat-version\"", "data-value");
    println!("[dashboard] env steps {steps_1} -> {steps_2}, policy v{version_1} -> v{version_2}");
    assert!(steps_2 > steps_1 && version_2 > version_1, "the numbers do not move");
    // What the page shows lies between what progress.csv said before the first load and after the second.
    assert!(
        before.env_steps as f64 <= steps_1 && steps_2 <= after.env_steps as f64,
        "{before:?} {steps_1} {steps_2} {after:?}"
    );
    assert!(before.policy_version as f64 <= version_1 && version_2 <= after.policy_version as f64);
    let accepted = |text: &str| {
        samples(text, "proxima_learner_rollouts_total")
            .into_iter()
            .find(|(labels, _)| labels.contains("outcome=\"accepted\""))
            .map_or(0.0, |(_, v)| v)
    };
    let shown = number(&second, "data-outcome=\"accepted\"", "data-value");
    assert!(accepted(&metrics_before) <= shown && shown <= accepted(&metrics_after), "accepted rollouts {shown}");
    for chart in ["mean_return", "advantages", "approx_kl", "clip_fraction", "entropy", "explained_variance"] {
        let points = number(&second, &format!("id=\"chart-{chart}\""), "data-points");
        assert!(points >= 2.0, "chart {chart} has {points} points");
    }
    for name in ["actor-a", "actor-b"] {
        let rate = number(&second, &format!("data-actor=\"{name}\""), "data-steps-per-second");
        assert!(rate > 0.0, "{name}: {rate} env steps/s in the table");
    }
    assert_eq!(number(&second, "id=\"stat-connected\"", "data-value"), 2.0);

    // The JSON the page uses agrees with progress.csv row for row.
    let state: Value = serde_json::from_str(&http_get(dash, "/api/state").expect("/api/state")).expect("JSON");
    let columns: Vec<&str> = state["columns"].as_array().expect("columns").iter().filter_map(Value::as_str).collect();
    let csv = std::fs::read_to_string(run_dir.join("progress.csv")).expect("progress.csv");
    // The complete lines only: the learner may be appending a row right now.
    let csv = &csv[..csv.rfind('\n').map_or(0, |end| end + 1)];
    let header: Vec<&str> = csv.lines().next().expect("header").split(',').collect();
    assert_eq!(columns, header, "the JSON's columns are progress.csv's");
    let csv_rows: Vec<Vec<&str>> = csv.lines().skip(1).map(|l| l.split(',').collect()).collect();
    let version_col = columns.iter().position(|c| *c == "policy_version").expect("policy_version column");
    let mut compared = 0;
    for row in state["rows"].as_array().expect("rows") {
        let row = row.as_array().expect("row");
        let Some(csv_row) =
            csv_rows.iter().find(|r| r[version_col].parse::<f64>().ok() == row[1 + version_col].as_f64())
        else {
            continue;
        };
        for (i, column) in columns.iter().enumerate() {
            let ours = row[1 + i].as_f64();
            let theirs = csv_row[i].parse::<f64>().ok().filter(|v| v.is_finite());
            match (ours, theirs) {
                (Some(a), Some(b)) => assert!((a - b).abs() <= 1e-3 * (1.0 + b.abs()), "{column}: JSON {a}, CSV {b}"),
                (a, b) => assert_eq!(a.is_some(), b.is_some(), "{column}: JSON {a:?}, CSV {b:?}"),
            }
        }
        compared += 1;
    }
    println!("[dashboard] {compared} JSON rows equal their progress.csv rows");
    assert!(compared >= 10, "only {compared} rows compared");

    // A screenshot, kept as a test artifact.
    let artifacts = tests::workspace_root().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifact directory");
    let shot = artifacts.join("dashboard.png");
    let started = Instant::now();
    browse(
        &url,
        &[&format!("--screenshot={}", shot.display()), "--window-size=1440,1300", "--hide-scrollbars"],
        &profile,
    );
    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 20_000, "screenshot of {} bytes", png.len());
    println!(
        "[dashboard] screenshot {} ({} bytes, {:.1} s)",
        shot.display(),
        png.len(),
        started.elapsed().as_secs_f64()
    );
}

/// `learner train` serves the same dashboard while it trains in one process (no actor table, mode `train`).
#[test]
fn local_training_serves_the_dashboard_too() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dash = free_port();
    let config = tests::workspace_root().join("configs/cartpole.toml");
    let args: Vec<String> = ["train", "--config", &config.display().to_string(), "--runs-dir"]
        .iter()
        .map(|s| s.to_string())
        .chain([dir.path().join("runs").display().to_string()])
        .chain(["--total-steps", "3000000", "--target-return", "inf", "--dashboard-addr"].map(String::from))
        .chain([format!("127.0.0.1:{dash}")])
        .collect();
    let mut train = tests::procs::Proc::spawn("train", &tests::bin_path("learner"), &args, &[], dir.path());
    let state = train.wait_for("the dashboard's JSON with updates", Duration::from_secs(60), |_| {
        let state: Value = serde_json::from_str(&http_get(dash, "/api/state")?).ok()?;
        (state["updates"].as_u64()? >= 5).then_some(state)
    });
    assert_eq!(state["run"]["mode"], "train");
    assert_eq!(state["actors"].as_array().map(Vec::len), Some(0));
    let page = http_get(dash, "/").expect("the page");
    assert!(page.contains("<svg") || page.contains("chart-"), "not the dashboard page");
    println!("[dashboard] learner train: {} updates served", state["updates"]);
}
