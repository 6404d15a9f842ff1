//! TensorBoard event files against `progress.csv`: `learner train` writes both into the run directory, and
//! TensorBoard's own Python reader (`EventAccumulator`, run by `tests/fixtures/tensorboard/read_events.py`) reads
//! the events back. Every row of `progress.csv` has, at its `env_steps`, the same value in the scalar of every
//! column (within f32 rounding; `wall_seconds` and `steps_per_second` within the CSV's decimals), and an
//! `advantages` histogram over exactly the update's batch. A second run into the same directory gets a file of its
//! own, whose `SessionLog` START makes the reader drop the first run, as `progress.csv` was rewritten. A `learner
//! serve` killed (SIGKILL) and resumed continues steps and `wall_seconds` in a second file, and the reader drops
//! the updates after the checkpoint that `progress.csv` dropped.
//!
//! Needs the `tensorboard` package in the test Python (`scripts/test.sh` installs it into `.venv`; another
//! interpreter: `PROXIMA_TB_PYTHON`, else `PROXIMA_PYTHON`); without it the test fails and says so.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tests::procs::{Learner, free_port, max_version, start_actor};

/// The interpreter with `tensorboard`: `$PROXIMA_TB_PYTHON`, else the tests' Python ([`tests::python`]).
fn tb_python() -> PathBuf {
    std::env::var_os("PROXIMA_TB_PYTHON").map_or_else(tests::python, PathBuf::from)
}

/// Runs `learner train` on CartPole for `steps` env steps with `seed` into `runs/tb`.
fn train(runs: &Path, steps: u64, seed: u64) {
    let config = tests::workspace_root().join("configs/cartpole.toml");
    let out = Command::new(tests::bin_path("learner"))
        .arg("train")
        .arg("--config")
        .arg(&config)
        .args(["--total-steps", &steps.to_string(), "--seed", &seed.to_string(), "--run-name", "tb"])
        .arg("--runs-dir")
        .arg(runs)
        .output()
        .expect("run learner train");
    assert!(out.status.success(), "learner train failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// `progress.csv` whole: the header and every row's fields (`None` where empty).
fn progress(run_dir: &Path) -> (Vec<String>, Vec<Vec<Option<f64>>>) {
    let text = std::fs::read_to_string(run_dir.join("progress.csv")).expect("read progress.csv");
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().expect("a header").split(',').map(str::to_string).collect();
    let rows = lines
        .map(|line| {
            let fields: Vec<Option<f64>> = line
                .split(',')
                .map(|f| (!f.is_empty()).then(|| f.parse().unwrap_or_else(|e| panic!("bad number {f:?}: {e}"))))
                .collect();
            assert_eq!(fields.len(), header.len(), "row {line:?}");
            fields
        })
        .collect();
    (header, rows)
}

/// A number from the reader's JSON (non-finite ones come as strings).
fn num(v: &Value) -> f64 {
    match v {
        Value::String(s) => s.parse().unwrap_or_else(|e| panic!("not a number: {s:?}: {e}")),
        v => v.as_f64().unwrap_or_else(|| panic!("not a number: {v}")),
    }
}

/// What TensorBoard's reader finds in `run_dir`.
fn read_events(run_dir: &Path) -> Value {
    let script = tests::workspace_root().join("tests/fixtures/tensorboard/read_events.py");
    let python = tb_python();
    let out = Command::new(&python)
        .arg(&script)
        .arg(run_dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    assert!(
        out.status.success(),
        "TensorBoard's reader failed ({}; scripts/test.sh installs tensorboard into .venv):\n{}",
        python.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the reader's JSON")
}

/// How closely the events matched.
#[derive(Debug, Default)]
struct Compared {
    rows: usize,
    tags: usize,
    values: usize,
    /// Values whose event value is exactly the CSV value rounded to f32 (NaN for NaN).
    exact: usize,
    /// Values of `wall_seconds` and `steps_per_second`, which the CSV rounds.
    rounded: usize,
    /// Largest relative deviation of a value from its CSV value (the two columns with fewer decimals left out).
    max_rel: f64,
    /// Largest absolute deviation of `wall_seconds` and `steps_per_second` (the CSV rounds them).
    max_rounded: f64,
    histograms: usize,
}

/// Checks the events of `run_dir` against its `progress.csv`; `files` event files are expected.
fn compare(run_dir: &Path, files: usize, since_unix: f64) -> Compared {
    let (header, rows) = progress(run_dir);
    assert!(rows.len() >= 5, "too few updates: {}", rows.len());
    let tb = read_events(run_dir);
    let col = |name: &str| header.iter().position(|h| h == name).unwrap_or_else(|| panic!("no column {name}"));
    let steps: Vec<i64> = rows.iter().map(|r| r[col("env_steps")].expect("env_steps") as i64).collect();
    // A resumed run continues the wall clock: it never starts again.
    let wall: Vec<f64> = rows.iter().map(|r| r[col("wall_seconds")].expect("wall_seconds")).collect();
    assert!(wall.windows(2).all(|w| w[0] <= w[1]), "wall_seconds goes back: {wall:?}");

    let names = tb["files"].as_array().expect("files");
    assert_eq!(names.len(), files, "event files: {names:?}");
    assert!(names.iter().all(|n| n.as_str().is_some_and(|n| n.starts_with("events.out.tfevents."))), "{names:?}");
    assert_eq!(tb["file_version"].as_f64(), Some(2.0), "file_version");

    // Every column but env_steps (the step) is a scalar tag; nothing else is.
    let scalars = tb["scalars"].as_object().expect("scalars");
    let want: Vec<&str> = header.iter().map(String::as_str).filter(|h| *h != "env_steps").collect();
    let mut got: Vec<&str> = scalars.keys().map(String::as_str).collect();
    got.sort_unstable();
    let mut want_sorted = want.clone();
    want_sorted.sort_unstable();
    assert_eq!(got, want_sorted, "scalar tags");
    let plugin_scalars: Vec<&str> =
        tb["plugins"]["scalars"].as_array().expect("plugin scalars").iter().filter_map(Value::as_str).collect();
    assert_eq!(plugin_scalars, want_sorted, "tags of TensorBoard's scalars plugin");
    assert_eq!(tb["plugins"]["histograms"], serde_json::json!(["advantages"]), "histogram plugin tags");

    let mut c = Compared { rows: rows.len(), tags: want.len(), ..Default::default() };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64();
    for tag in &want {
        let points: BTreeMap<i64, (f64, f64)> = scalars[*tag]
            .as_array()
            .expect("points")
            .iter()
            .map(|p| (p[0].as_i64().expect("step"), (num(&p[1]), num(&p[2]))))
            .collect();
        assert_eq!(points.len(), scalars[*tag].as_array().map_or(0, Vec::len), "{tag}: a step twice");
        let with_value = rows.iter().filter(|r| r[col(tag)].is_some()).count();
        assert_eq!(points.len(), with_value, "{tag}: events at steps {:?}, rows {steps:?}", points.keys());
        for (row, step) in rows.iter().zip(&steps) {
            let Some(csv) = row[col(tag)] else {
                assert!(!points.contains_key(step), "{tag}: a value at step {step} where progress.csv has none");
                continue;
            };
            let (value, wall_time) = *points.get(step).unwrap_or_else(|| panic!("{tag}: no event at step {step}"));
            assert!(wall_time >= since_unix - 1.0 && wall_time <= now + 1.0, "{tag}: wall_time {wall_time}");
            c.values += 1;
            // simple_value is an f32: relative rounding error at most 2^-24; the CSV prints these two rounded.
            let decimals = match *tag {
                "wall_seconds" => 5e-4,
                "steps_per_second" => 5e-2,
                _ => 0.0,
            };
            let same_f32 = value.to_bits() == (csv as f32 as f64).to_bits() || (value.is_nan() && csv.is_nan());
            if decimals == 0.0 && same_f32 {
                c.exact += 1;
            }
            if csv.is_nan() || value.is_nan() {
                assert!(csv.is_nan() && value.is_nan(), "{tag} at {step}: {value} vs {csv} in progress.csv");
                continue;
            }
            let dev = (value - csv).abs();
            assert!(
                dev <= 1e-6 * csv.abs() + 1e-30 + decimals,
                "{tag} at step {step}: {value} in the events, {csv} in progress.csv"
            );
            if decimals > 0.0 {
                c.rounded += 1;
                c.max_rounded = c.max_rounded.max(dev);
            } else if csv != 0.0 {
                c.max_rel = c.max_rel.max(dev / csv.abs());
            }
        }
    }

    // One advantages histogram per update, over exactly its batch (the env steps it added).
    let histos = tb["histograms"]["advantages"].as_array().expect("advantages histograms");
    assert_eq!(histos.len(), rows.len(), "one histogram per update");
    // `learner train` starts every run from 0 env steps.
    let mut before = 0;
    for ((h, row), step) in histos.iter().zip(&rows).zip(&steps) {
        assert_eq!(h["step"].as_i64(), Some(*step), "histogram steps follow the rows");
        let (n, min, max, sum, sum_sq) =
            (num(&h["num"]), num(&h["min"]), num(&h["max"]), num(&h["sum"]), num(&h["sum_squares"]));
        let batch = (step - before) as f64;
        before = *step;
        assert_eq!(n, batch, "histogram at {step} counts {n} advantages, the update trained on {batch} samples");
        let buckets: Vec<f64> = h["bucket"].as_array().expect("buckets").iter().map(num).collect();
        let limits: Vec<f64> = h["bucket_limit"].as_array().expect("limits").iter().map(num).collect();
        assert_eq!((buckets.len(), limits.len()), (30, 30), "30 buckets at {step}");
        assert_eq!(buckets.iter().sum::<f64>(), n, "bucket counts add up to num at {step}");
        assert!(limits.windows(2).all(|w| w[0] <= w[1]) && limits[29] == max, "limits at {step}: {limits:?}");
        // The CSV's advantage columns describe the same batch.
        let (p05, p95) = (row[col("adv_p05")].expect("adv_p05"), row[col("adv_p95")].expect("adv_p95"));
        assert!(min <= p05 && p05 <= p95 && p95 <= max, "min {min} p05 {p05} p95 {p95} max {max} at {step}");
        let (mean, std) = (row[col("adv_mean")].expect("adv_mean"), row[col("adv_std")].expect("adv_std"));
        assert!((sum / n - mean).abs() <= 1e-9 * (1.0 + mean.abs()), "mean {} vs {mean} at {step}", sum / n);
        let var = (sum_sq / n - (sum / n).powi(2)).max(0.0);
        assert!((var.sqrt() - std).abs() <= 1e-6 * (1.0 + std), "std {} vs {std} at {step}", var.sqrt());
        c.histograms += 1;
    }
    // The CSV prints the other columns in Rust's shortest round-trip form: their events hold them rounded to f32.
    assert_eq!(c.exact + c.rounded, c.values, "values not exactly the CSV's rounded to f32: {c:?}");
    c
}

impl std::fmt::Display for Compared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} rows x {} scalar tags: {} values compared, {} exactly the CSV value as f32 (max relative deviation \
             {:.1e}), {} of wall_seconds and steps_per_second within the CSV's decimals (max deviation {:.3}); {} \
             advantages histograms",
            self.rows,
            self.tags,
            self.values,
            self.exact,
            self.max_rel,
            self.rounded,
            self.max_rounded,
            self.histograms
        )
    }
}

#[test]
fn tensorboard_events_match_progress_csv() {
    let dir = tempfile::tempdir().expect("temp dir");
    let runs = dir.path().join("runs");
    let run_dir = runs.join("tb");
    tests::bin_path("learner");

    let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64();
    train(&runs, 5000, 1);
    let first = compare(&run_dir, 1, started);
    println!("[tensorboard] one run: {first}");

    // Again into the same run directory, shorter and with another seed: progress.csv is rewritten, and
    // TensorBoard reads both files but keeps only the second run's events. (Its checkpoints removed first: a run
    // directory with checkpoints is only continued, with --resume.)
    std::fs::remove_dir_all(run_dir.join("checkpoints")).expect("remove the first run's checkpoints");
    train(&runs, 2560, 2);
    let second = compare(&run_dir, 2, started);
    println!("[tensorboard] the run again, in a second file: {second}");
    let tb = read_events(&run_dir);
    println!("[tensorboard] read with tensorboard {}", tb["tensorboard"]);
}

/// `learner serve`, killed after the newest periodic checkpoint and resumed: the second file continues steps and
/// wall seconds, and TensorBoard keeps exactly the rows `progress.csv` kept.
#[test]
fn a_resumed_serve_continues_the_events() {
    let dir = tempfile::tempdir().expect("temp dir");
    let runs = dir.path().join("runs");
    let port = free_port();
    let overrides = ["server.checkpoint_every=4", "total_steps=100000000", "target_return=1000000.0"];
    let timeout = Duration::from_secs(60);
    let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64();
    let mut learner = Learner::start(dir.path(), "learner-1", &runs, "serve", port, &overrides, false);
    let mut actor = start_actor(dir.path(), "actor-0", port, &[]);
    let run_dir = learner.run_dir.clone();
    // Killed between two checkpoints (2 or 3 updates after one), so it dies with updates a resume loses.
    learner.proc.wait_for("8 updates, between two checkpoints", timeout, |_| {
        max_version(&tests::read_progress(&run_dir)).filter(|v| *v >= 8 && v % 4 == 2)
    });
    learner.proc.kill();
    let killed_at = max_version(&tests::read_progress(&run_dir)).expect("rows");
    let (checkpoint, _) = learner.checkpoints().pop().expect("a checkpoint");

    let mut learner = Learner::start(dir.path(), "learner-2", &runs, "serve", port, &overrides, true);
    learner.proc.wait_for("6 updates after the resume", timeout, |_| {
        max_version(&tests::read_progress(&run_dir)).filter(|v| *v >= checkpoint + 6)
    });
    let status = learner.terminate(timeout);
    assert!(status.success(), "the resumed learner exited with {status}\n{}", learner.proc.tail(20));
    actor.kill();
    let c = compare(&run_dir, 2, started);
    println!(
        "[tensorboard] serve killed at v{killed_at}, resumed from the checkpoint of v{checkpoint} ({} updates \
         lost): {c}",
        killed_at - checkpoint
    );
}
