//! The live dashboard the learner serves (`--dashboard-addr`, `none` to turn it off): one HTML page with its
//! script and SVG charts inside the binary (no build step, nothing fetched at run time), and the JSON it polls,
//! `GET /api/state`:
//!
//! - `run`: env id, run name, mode (`train` or `serve`), step budget, target return, KL target, seconds up;
//! - `columns` and `rows`: the update history in `progress.csv`'s columns ([`crate::run::progress::COLUMNS`]), one
//!   row per kept update, each row `[seq, value...]` (`null` where a value is missing). `?since=SEQ` returns only
//!   rows after `seq`; when the history grows past [`HISTORY_ROWS`] every other row is dropped and `epoch` goes
//!   up, and a client holding another epoch fetches everything again;
//! - `metrics`: the learner's own Prometheus samples (`proxima_learner_*`, without histogram buckets), the same
//!   numbers `/metrics` shows: rollouts by outcome, rejections by reason, queue depth, policy lag (`_sum` and
//!   `_count`), connected actors;
//! - `actors`: the registered actors (name, host, envs, env steps, env steps/s over the last 10 s, seconds since
//!   last seen, the policy version of their last rollout, open policy streams); empty in local training.

mod http;

pub use http::{serve, start, start_on_thread};

use crate::run::progress::{COLUMNS, values};
use crate::run::update_loop::ReportSink;
use crate::update::trainer::UpdateReport;
use serde::Serialize;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

/// Most update rows the dashboard keeps; beyond it every other row is dropped (the curve keeps its shape).
pub const HISTORY_ROWS: usize = 2000;

/// What the dashboard says about the run itself.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    /// Env id.
    pub env: String,
    /// Run directory name.
    pub run: String,
    /// `train` or `serve`.
    pub mode: &'static str,
    /// Step budget.
    pub total_steps: u64,
    /// Target mean return, if any.
    pub target_return: Option<f64>,
    /// The KL the objective aims at (KL penalty) or stops at (`target_kl`), if any.
    pub kl_target: Option<f64>,
}

impl RunInfo {
    /// The run of `cfg` in run directory `run`.
    pub fn of(cfg: &crate::config::TrainConfig, run: &std::path::Path, mode: &'static str) -> Self {
        let kl_target = match cfg.ppo.objective {
            crate::config::Objective::KlPenalty => Some(cfg.ppo.kl_target),
            crate::config::Objective::Clip => cfg.ppo.target_kl,
        };
        Self {
            env: cfg.env.id.clone(),
            run: run.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            mode,
            total_steps: cfg.total_steps,
            target_return: cfg.target_return.filter(|t| t.is_finite()),
            kl_target,
        }
    }
}

/// One registered actor, as the dashboard's table shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ActorRow {
    /// Learner-assigned id.
    pub id: u64,
    /// The name it registered with.
    pub name: String,
    /// The address it connected from.
    pub host: String,
    /// Envs it steps.
    pub num_envs: usize,
    /// Env steps of its accepted rollouts.
    pub env_steps: u64,
    /// Env steps per second over the last 10 seconds.
    pub steps_per_second: f64,
    /// Seconds since its registration, last rollout or last closed stream.
    pub last_seen_seconds: f64,
    /// Policy version of its last accepted rollout.
    pub policy_version: Option<u64>,
    /// Open policy streams (0: not connected now).
    pub streams: usize,
}

/// Where the dashboard reads the actor table from (the gRPC service's registry).
pub trait ActorSource: Send + Sync {
    /// The registered actors.
    fn actors(&self) -> Vec<ActorRow>;
}

/// The update history, thinned to at most [`HISTORY_ROWS`] rows.
#[derive(Debug, Default)]
struct History {
    /// `(seq, values)`, oldest first.
    rows: Vec<(u64, [Option<f64>; COLUMNS.len()])>,
    /// Updates seen.
    seen: u64,
    /// Every `stride`-th update is kept.
    stride: u64,
    /// Times the history was thinned.
    epoch: u64,
}

impl History {
    fn push(&mut self, row: [Option<f64>; COLUMNS.len()]) {
        let seq = self.seen;
        self.seen += 1;
        let stride = self.stride.max(1);
        // The newest row is always shown: it replaces the previous one unless that one falls on the stride.
        if let Some(last) = self.rows.last()
            && last.0 % stride != 0
        {
            self.rows.pop();
        }
        self.rows.push((seq, row));
        if self.rows.len() > HISTORY_ROWS {
            self.stride = stride * 2;
            let keep = self.stride;
            let newest = self.rows.pop();
            self.rows.retain(|(s, _)| s % keep == 0);
            self.rows.extend(newest);
            self.epoch += 1;
        }
    }
}

/// The dashboard's state: run info, history, the metrics handle and the actor source.
pub struct Dashboard {
    run: RunInfo,
    started: Instant,
    history: Mutex<History>,
    metrics: Option<common::metrics::PrometheusHandle>,
    actors: OnceLock<Arc<dyn ActorSource>>,
}

impl Dashboard {
    /// A dashboard for `run`, reading metrics from `metrics` (none: the `metrics` part stays empty).
    pub fn new(run: RunInfo, metrics: Option<common::metrics::PrometheusHandle>) -> Self {
        Self { run, started: Instant::now(), history: Mutex::default(), metrics, actors: OnceLock::new() }
    }

    /// Shows `source`'s actors in the table (set once, by `serve`).
    pub fn set_actors(&self, source: Arc<dyn ActorSource>) {
        let _ = self.actors.set(source);
    }

    fn history(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one update (the loop calls it through [`DashboardSink`]).
    pub fn record(&self, report: &UpdateReport, wall_seconds: f64) {
        self.history().push(values(report, wall_seconds));
    }

    /// The `/api/state` document: rows after `since` (all for `None` or another `epoch`).
    pub fn state(&self, since: Option<u64>, epoch: Option<u64>) -> serde_json::Value {
        let (rows, history_epoch, updates) = {
            let h = self.history();
            let fresh = epoch != Some(h.epoch);
            let rows: Vec<serde_json::Value> = h
                .rows
                .iter()
                .filter(|(seq, _)| fresh || since.is_none_or(|s| *seq > s))
                .map(|(seq, v)| {
                    let mut row = vec![serde_json::json!(seq)];
                    row.extend(
                        v.iter().map(|x| x.filter(|x| x.is_finite()).map_or(serde_json::Value::Null, |x| x.into())),
                    );
                    serde_json::Value::Array(row)
                })
                .collect();
            (rows, h.epoch, h.seen)
        };
        let actors = self.actors.get().map(|a| a.actors()).unwrap_or_default();
        serde_json::json!({
            "run": self.run,
            "uptime_seconds": self.started.elapsed().as_secs_f64(),
            "updates": updates,
            "epoch": history_epoch,
            "columns": COLUMNS,
            "rows": rows,
            "metrics": self.metrics.as_ref().map(|h| learner_samples(&h.render())).unwrap_or_default(),
            "actors": actors,
        })
    }
}

/// One Prometheus sample.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// Metric name (with `_sum` / `_count` for summaries of histograms).
    pub name: String,
    /// Labels other than the global `role` and `env`.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

/// The `proxima_learner_*` samples of a text exposition, without histogram buckets and quantiles.
pub fn learner_samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| l.starts_with("proxima_learner_") && !l.contains("_bucket{") && !l.contains("quantile="))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let value: f64 = value.parse().ok()?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
                .filter(|(k, _)| k != "role" && k != "env")
                .collect();
            Some(Sample { name: name.to_string(), labels, value })
        })
        .collect()
}

/// Feeds the update loop's reports to a [`Dashboard`], with wall seconds continued across a resume as in
/// `progress.csv`.
pub struct DashboardSink {
    dashboard: Arc<Dashboard>,
    wall_offset: f64,
}

impl DashboardSink {
    /// Records into `dashboard`, adding `wall_offset` seconds (the run's wall time before a resume).
    pub fn new(dashboard: Arc<Dashboard>, wall_offset: f64) -> Self {
        Self { dashboard, wall_offset }
    }
}

impl ReportSink for DashboardSink {
    fn record(&mut self, report: &UpdateReport, wall_seconds: f64) {
        self.dashboard.record(report, wall_seconds + self.wall_offset);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn history_thins_to_its_bound_and_keeps_the_newest_row() {
        let mut h = History::default();
        for i in 0..5000u64 {
            let mut row = [None; COLUMNS.len()];
            row[0] = Some(i as f64);
            h.push(row);
        }
        assert!(h.rows.len() <= HISTORY_ROWS + 1, "{} rows", h.rows.len());
        assert!(h.rows.len() > HISTORY_ROWS / 4, "{} rows", h.rows.len());
        assert_eq!(h.rows.last().unwrap().0, 4999, "the newest update is shown");
        assert_eq!(h.rows[0].0, 0, "the first update is kept");
        assert!(h.epoch >= 1);
        let seqs: Vec<u64> = h.rows.iter().map(|r| r.0).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn state_sends_rows_since_a_sequence_number_in_the_same_epoch() {
        let d = Dashboard::new(
            RunInfo {
                env: "CartPole-v1".into(),
                run: "r".into(),
                mode: "train",
                total_steps: 1,
                target_return: None,
                kl_target: None,
            },
            None,
        );
        for v in 1..=3u64 {
            d.record(&UpdateReport { policy_version: v, env_steps: 100 * v, ..Default::default() }, v as f64);
        }
        let all = d.state(None, None);
        assert_eq!(all["rows"].as_array().unwrap().len(), 3);
        assert_eq!(all["columns"][0], "env_steps");
        assert_eq!(all["rows"][2][1], 300.0, "seq first, then the columns");
        let epoch = all["epoch"].as_u64();
        let newer = d.state(Some(1), epoch);
        assert_eq!(newer["rows"].as_array().unwrap().len(), 1);
        assert_eq!(d.state(Some(1), Some(99))["rows"].as_array().unwrap().len(), 3, "another epoch: everything");
    }

    #[test]
    fn learner_samples_are_read_off_the_exposition() {
        let text = "# TYPE proxima_learner_rollouts_total counter\n\
                    proxima_learner_rollouts_total{role=\"learner\",env=\"CartPole-v1\",outcome=\"accepted\"} 12\n\
                    proxima_learner_queue_depth{role=\"learner\",env=\"CartPole-v1\"} 3\n\
                    proxima_learner_policy_lag_versions_bucket{le=\"1\"} 4\n\
                    proxima_learner_policy_lag_versions_sum 7\n\
                    proxima_actor_env_steps_total 9\n";
        let s = learner_samples(text);
        assert_eq!(s.len(), 3, "{s:?}");
        assert_eq!(s[0].name, "proxima_learner_rollouts_total");
        assert_eq!(s[0].labels.get("outcome").map(String::as_str), Some("accepted"));
        assert!(!s[0].labels.contains_key("role"));
        assert_eq!((s[1].value, s[2].name.as_str()), (3.0, "proxima_learner_policy_lag_versions_sum"));
    }
}
