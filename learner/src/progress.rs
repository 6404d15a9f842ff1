//! Progress of a run: one CSV row per update (`progress.csv`) and a short line for people.

use crate::error::{Error, Result};
use crate::trainer::UpdateReport;
use std::io::Write;
use std::path::Path;

/// Columns of `progress.csv`, in order.
pub const COLUMNS: [&str; 26] = [
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
];

/// Appends update reports to `progress.csv`.
pub struct ProgressCsv {
    file: std::io::BufWriter<std::fs::File>,
    path: std::path::PathBuf,
}

impl ProgressCsv {
    /// Creates (truncates) `dir/progress.csv` and writes the header; with `append`, continues an existing file.
    pub fn create(dir: &Path, append: bool) -> Result<Self> {
        let path = dir.join("progress.csv");
        let existing = append && path.is_file();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(existing)
            .truncate(!existing)
            .open(&path)
            .map_err(Error::io(&path))?;
        let mut p = Self { file: std::io::BufWriter::new(file), path };
        if !existing {
            let header = COLUMNS.join(",");
            writeln!(p.file, "{header}").map_err(Error::io(&p.path))?;
        }
        Ok(p)
    }

    /// Writes one row and flushes, so the file can be followed while training runs.
    pub fn append(&mut self, r: &UpdateReport, wall_seconds: f64) -> Result<()> {
        let opt = |x: Option<f64>| x.map_or(String::new(), |v| format!("{v}"));
        let e = &r.epochs.mean;
        let a = &r.advantages;
        let fields: [String; 26] = [
            r.env_steps.to_string(),
            format!("{wall_seconds:.3}"),
            r.policy_version.to_string(),
            r.episodes.to_string(),
            opt(r.mean_return),
            opt(r.mean_length),
            r.approx_kl.to_string(),
            e.clipfrac.to_string(),
            e.entropy.to_string(),
            r.explained_variance.to_string(),
            e.pg_loss.to_string(),
            e.v_loss.to_string(),
            r.learning_rate.to_string(),
            r.kl_beta.to_string(),
            r.clip_coef.to_string(),
            e.grad_norm.to_string(),
            r.epochs.epochs.to_string(),
            a.mean.to_string(),
            a.std.to_string(),
            a.quantiles[0].to_string(),
            a.quantiles[1].to_string(),
            a.quantiles[2].to_string(),
            a.quantiles[3].to_string(),
            a.quantiles[4].to_string(),
            r.stale_rollouts.to_string(),
            format!("{:.1}", r.env_steps as f64 / wall_seconds.max(1e-9)),
        ];
        writeln!(self.file, "{}", fields.join(",")).map_err(Error::io(&self.path))?;
        self.file.flush().map_err(Error::io(&self.path))
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
    /// One `tracing` line per update.
    Log,
}

impl Display {
    /// A bar over `total_steps` when stderr is a terminal, else log lines.
    pub fn for_terminal(total_steps: u64) -> Self {
        use std::io::IsTerminal;
        if !std::io::stderr().is_terminal() {
            return Display::Log;
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
            Display::Log => tracing::info!("{}", progress_line(r, wall_seconds)),
        }
    }

    /// Leaves the bar on screen in its final state.
    pub fn finish(&self) {
        if let Display::Bar(bar) = self {
            bar.abandon();
        }
    }
}
