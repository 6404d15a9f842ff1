//! Progress of a run: one CSV row per update (`progress.csv`) and a short line for people.

use crate::error::{Error, Result};
use crate::run::dir::WholeAppends;
use crate::update::trainer::UpdateReport;
use std::io::Write;
use std::path::Path;

/// Columns of `progress.csv`, in order; [`values`] gives a report's numbers in the same order (also for the
/// dashboard and TensorBoard).
pub const COLUMNS: [&str; 27] = [
    "env_steps",
    "wall_seconds",
    "policy_version",
    "episodes",
    "mean_return",
    "mean_length",
    "approx_kl",
    "clip_fraction",
    "entropy",
    "explained_variance",
    "policy_loss",
    "value_loss",
    "learning_rate",
    "kl_beta",
    "clip_coef",
    "grad_norm",
    "epochs",
    "adv_mean",
    "adv_std",
    "adv_p05",
    "adv_p25",
    "adv_p50",
    "adv_p75",
    "adv_p95",
    "stale_rollouts",
    "steps_per_second",
    "return_std",
];

/// An update report's numbers in [`COLUMNS`] order (`None` where there is none yet: the return columns before the
/// first episode ends). `wall_seconds` is the run's, across resumes.
pub fn values(r: &UpdateReport, wall_seconds: f64) -> [Option<f64>; COLUMNS.len()] {
    let e = &r.epochs.mean;
    let a = &r.advantages;
    [
        Some(r.env_steps as f64),
        Some(wall_seconds),
        Some(r.policy_version as f64),
        Some(r.episodes as f64),
        r.mean_return,
        r.mean_length,
        Some(r.approx_kl),
        Some(e.clipfrac),
        Some(e.entropy),
        Some(r.explained_variance),
        Some(e.pg_loss),
        Some(e.v_loss),
        Some(r.learning_rate),
        Some(r.kl_beta),
        Some(r.clip_coef),
        Some(e.grad_norm),
        Some(r.epochs.epochs as f64),
        Some(a.mean),
        Some(a.std),
        Some(a.quantiles[0]),
        Some(a.quantiles[1]),
        Some(a.quantiles[2]),
        Some(a.quantiles[3]),
        Some(a.quantiles[4]),
        Some(r.stale_rollouts as f64),
        Some(r.env_steps as f64 / wall_seconds.max(1e-9)),
        r.return_std,
    ]
}

/// Appends update reports to `progress.csv`.
pub struct ProgressCsv {
    /// The file, appended to row by row.
    out: WholeAppends,
    /// Wall seconds of the rows kept from before a resume; new rows continue from there.
    wall_offset: f64,
}

impl ProgressCsv {
    /// Creates (truncates) `dir/progress.csv` and writes the header.
    pub fn create(dir: &Path) -> Result<Self> {
        let path = dir.join("progress.csv");
        let mut file = std::fs::File::create(&path).map_err(Error::io(&path))?;
        let header = format!("{}\n", COLUMNS.join(","));
        file.write_all(header.as_bytes()).map_err(Error::io(&path))?;
        Ok(Self::open(file, path, header.len() as u64, 0.0))
    }

    /// Appends to `file` (at `path`, `len` bytes of header and complete rows so far).
    fn open(file: std::fs::File, path: std::path::PathBuf, len: u64, wall_offset: f64) -> Self {
        let metric = common::metrics::PROGRESS_WRITE_FAILURES;
        Self { out: WholeAppends::new(file, path, len, "progress.csv", metric), wall_offset }
    }

    /// Continues `dir/progress.csv` after resuming at `version`: rows of later versions (trained after that
    /// checkpoint, then lost) are dropped so versions and steps never go backwards, and wall time continues.
    pub fn resume(dir: &Path, version: u64) -> Result<Self> {
        let path = dir.join("progress.csv");
        let Ok(text) = std::fs::read_to_string(&path) else { return Self::create(dir) };
        let version_col = COLUMNS.iter().position(|c| *c == "policy_version").unwrap_or(2);
        let wall_col = COLUMNS.iter().position(|c| *c == "wall_seconds").unwrap_or(1);
        let mut kept = vec![COLUMNS.join(",")];
        let mut wall_offset = 0.0;
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split(',').collect();
            let row_version = fields.get(version_col).and_then(|v| v.parse::<u64>().ok());
            if row_version.is_some_and(|v| v <= version) {
                wall_offset = fields.get(wall_col).and_then(|w| w.parse().ok()).unwrap_or(wall_offset);
                kept.push(line.to_string());
            }
        }
        let text = format!("{}\n", kept.join("\n"));
        crate::run::dir::write_atomic(&path, text.as_bytes())?;
        let file = std::fs::OpenOptions::new().append(true).open(&path).map_err(Error::io(&path))?;
        Ok(Self::open(file, path, text.len() as u64, wall_offset))
    }

    /// Wall seconds of the rows kept from before a resume (0 for a new file): where this process's rows continue.
    pub fn wall_offset(&self) -> f64 {
        self.wall_offset
    }

    /// Writes one row with one `write` call, so the file can be followed while training runs. A row that cannot be
    /// written (disk full) is left out: a partly written row is cut off again, the failure is counted in
    /// [`common::metrics::PROGRESS_WRITE_FAILURES`] and logged (at most once a minute for the same error), and training goes on;
    /// later rows are appended once there is space again.
    pub fn append(&mut self, r: &UpdateReport, wall_seconds: f64) {
        let line = self.row(r, wall_seconds);
        self.out.append(line.as_bytes());
    }

    /// One CSV line (with its newline) for an update report: every value in Rust's shortest round-trip form
    /// (counts print as integers), wall seconds to the millisecond and steps/s to one decimal.
    fn row(&self, r: &UpdateReport, wall_seconds: f64) -> String {
        let fields =
            values(r, wall_seconds + self.wall_offset).into_iter().zip(COLUMNS).map(|(v, column)| match (v, column) {
                (None, _) => String::new(),
                (Some(v), "wall_seconds") => format!("{v:.3}"),
                (Some(v), "steps_per_second") => format!("{v:.1}"),
                (Some(v), _) => format!("{v}"),
            });
        format!("{}\n", fields.collect::<Vec<_>>().join(","))
    }
}

/// The human progress line: env steps, steps/s, mean return, approx KL, clip fraction, entropy.
pub fn progress_line(r: &UpdateReport, wall_seconds: f64) -> String {
    let ret = r.mean_return.map_or("-".to_string(), |m| format!("{m:.1}"));
    format!(
        "steps {:>8}  steps/s {:>8.0}  return {:>7}  kl {:.4}  clipfrac {:.3}  entropy {:.3}  v{}",
        r.env_steps,
        r.env_steps as f64 / wall_seconds.max(1e-9),
        ret,
        r.approx_kl,
        r.epochs.mean.clipfrac,
        r.epochs.mean.entropy,
        r.policy_version
    )
}

/// How progress reaches a person: a live progress bar on a terminal, log lines otherwise.
pub enum Display {
    /// An interactive bar (stderr is a terminal).
    Bar(indicatif::ProgressBar),
    /// `tracing` lines, at most one per interval (see [`LogThrottle`]).
    Log(LogThrottle),
}

/// Which progress lines reach the log: the first update's, then at most one per `every`, and the newest one held
/// back, logged when training ends, so the last update is always shown.
#[derive(Debug)]
pub struct LogThrottle {
    every: std::time::Duration,
    last: std::cell::Cell<Option<std::time::Instant>>,
    held: std::cell::RefCell<Option<String>>,
}

impl LogThrottle {
    /// At most one line per `every`.
    pub fn new(every: std::time::Duration) -> Self {
        Self { every, last: std::cell::Cell::new(None), held: std::cell::RefCell::new(None) }
    }

    /// The line to log now for an update at `now`, if any; otherwise `line` is held back for [`Self::finish`].
    fn admit(&self, line: String, now: std::time::Instant) -> Option<String> {
        let due = self.last.get().is_none_or(|last| now.saturating_duration_since(last) >= self.every);
        if due {
            self.last.set(Some(now));
            self.held.replace(None);
            Some(line)
        } else {
            self.held.replace(Some(line));
            None
        }
    }

    /// The held-back line of the last update, if it was not logged.
    fn finish(&self) -> Option<String> {
        self.held.take()
    }
}

impl Display {
    /// Log lines at most once per `log_interval`, for a process without a terminal (a server, a container).
    pub fn log(log_interval: std::time::Duration) -> Self {
        Display::Log(LogThrottle::new(log_interval))
    }

    /// A bar over `total_steps` when stderr is a terminal, else log lines at most once per `log_interval`.
    pub fn for_terminal(total_steps: u64, log_interval: std::time::Duration) -> Self {
        use std::io::IsTerminal;
        if !std::io::stderr().is_terminal() {
            return Display::log(log_interval);
        }
        let bar = indicatif::ProgressBar::new(total_steps);
        let style = indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {human_pos}/{human_len} steps  {per_sec}  {msg}",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
        Display::Bar(bar)
    }

    /// Shows one update.
    pub fn update(&self, r: &UpdateReport, wall_seconds: f64) {
        match self {
            Display::Bar(bar) => {
                bar.set_position(r.env_steps);
                let ret = r.mean_return.map_or("-".to_string(), |m| format!("{m:.1}"));
                bar.set_message(format!("return {ret}  kl {:.4}  v{}", r.approx_kl, r.policy_version));
            }
            Display::Log(throttle) => {
                if let Some(line) = throttle.admit(progress_line(r, wall_seconds), std::time::Instant::now()) {
                    tracing::info!("{line}");
                }
            }
        }
    }

    /// Leaves the bar on screen in its final state, or logs the last update's line if it was held back.
    pub fn finish(&self) {
        match self {
            Display::Bar(bar) => bar.abandon(),
            Display::Log(throttle) => {
                if let Some(line) = throttle.finish() {
                    tracing::info!("{line}");
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The first update is logged, then at most one per interval, and the last one always (at the end).
    #[test]
    fn log_lines_are_throttled_but_keep_the_first_and_last() {
        let t = LogThrottle::new(std::time::Duration::from_secs(5));
        let start = std::time::Instant::now();
        let at = |s: u64| start + std::time::Duration::from_millis(s * 100);
        let logged: Vec<String> = (0..200u64).filter_map(|k| t.admit(format!("update {k}"), at(k))).collect::<Vec<_>>();
        // 200 updates over 20 s: at 0, 5, 10 and 15 s.
        assert_eq!(logged, ["update 0", "update 50", "update 100", "update 150"]);
        assert_eq!(t.finish().as_deref(), Some("update 199"));
        assert_eq!(t.finish(), None);
        // A last update that was itself logged is not repeated.
        assert_eq!(t.admit("final".into(), at(300)).as_deref(), Some("final"));
        assert_eq!(t.finish(), None);
    }

    #[test]
    fn resume_drops_rows_after_the_checkpoint_and_continues_wall_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut csv = ProgressCsv::create(dir.path()).unwrap();
        for v in 1..=5u64 {
            let r = UpdateReport { policy_version: v, env_steps: 100 * v, ..Default::default() };
            csv.append(&r, v as f64);
        }
        drop(csv);
        let mut csv = ProgressCsv::resume(dir.path(), 3).unwrap();
        csv.append(&UpdateReport { policy_version: 4, env_steps: 400, ..Default::default() }, 0.5);
        drop(csv);
        let text = std::fs::read_to_string(dir.path().join("progress.csv")).unwrap();
        let rows: Vec<Vec<&str>> = text.lines().skip(1).map(|l| l.split(',').collect()).collect();
        let versions: Vec<&str> = rows.iter().map(|r| r[2]).collect();
        assert_eq!(versions, ["1", "2", "3", "4"]);
        assert_eq!(rows[3][1], "3.500");
        assert_eq!(text.lines().next().unwrap(), COLUMNS.join(","));
    }
}
