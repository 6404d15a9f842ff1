//! The run directory: `config.toml` (resolved config), `progress.csv`, `model.safetensors`, `metrics.prom`.

use crate::config::TrainConfig;
use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A created run directory.
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// Creates `runs_dir/<run_name>` (named by the session when the config names none) and writes the resolved
    /// config into it.
    pub fn create(cfg: &TrainConfig) -> Result<Self> {
        let name = cfg.run_name.as_deref().ok_or_else(|| Error::Internal("the run has no name".into()))?;
        let path = cfg.runs_dir.join(name);
        std::fs::create_dir_all(&path).map_err(Error::io(&path))?;
        let dir = Self { path };
        dir.write_config(cfg)?;
        Ok(dir)
    }

    /// Writes `cfg` to `config.toml` (again, once an actor's spaces completed it).
    pub fn write_config(&self, cfg: &TrainConfig) -> Result<()> {
        let text = toml::to_string(cfg).map_err(|e| Error::Internal(format!("cannot serialise config: {e}")))?;
        write_atomic(&self.path.join("config.toml"), text.as_bytes())
    }

    /// The env, with its spaces, recorded in the `config.toml` of `cfg`'s run (named by `cfg.run_name`) by an
    /// earlier process of the run; `None` without one, or when it is of another env or has no spaces. Logged.
    pub fn saved_env(cfg: &TrainConfig) -> Option<crate::config::EnvConfig> {
        let path = cfg.runs_dir.join(cfg.run_name.as_ref()?).join("config.toml");
        let text = std::fs::read_to_string(&path).ok()?;
        let saved: TrainConfig = match toml::from_str(&text) {
            Ok(saved) => saved,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "the run's saved config does not parse");
                return None;
            }
        };
        let env = saved.env;
        let usable = env.id == cfg.env.id && env.observation_space.is_some() && env.action_space.is_some();
        usable.then(|| {
            tracing::info!(path = %path.display(), "env spaces taken from the run's saved config (resume)");
            env
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the policy weights to `model.safetensors`.
    pub fn write_model(&self, weights: &[u8]) -> Result<()> {
        write_atomic(&self.path.join("model.safetensors"), weights)
    }
}

/// Writes the final values of the process's metrics (Prometheus' text format, as `/metrics` serves them) to
/// `dir/metrics.prom`, once nothing can change them: exact totals (rejections by reason, rollouts by outcome)
/// that the last scrape before the process exits may have missed. A failed write is logged, not fatal.
pub fn write_final_metrics(dir: &Path, metrics: &common::metrics::PrometheusHandle) {
    let path = dir.join("metrics.prom");
    match write_atomic(&path, metrics.render().as_bytes()) {
        Ok(()) => tracing::info!(path = %path.display(), "final metrics written"),
        Err(e) => tracing::warn!(error = %e, "cannot write the final metrics"),
    }
}

/// Writes `bytes` to `path` atomically: a temporary file beside it (`path` with the extension `tmp`), fsync,
/// rename, fsync of the directory. On any failure (disk full while writing or syncing, for one) the temporary
/// file is removed before the error is returned, so neither a truncated `path` nor a stray temporary file is left.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .map_err(Error::io(&tmp))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(Error::io(path)));
    if let Err(e) = written {
        if let Err(rm) = std::fs::remove_file(&tmp)
            && rm.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %tmp.display(), error = %rm, "cannot remove the temporary file of a failed write");
        }
        return Err(e);
    }
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(Error::io(dir))?;
    }
    Ok(())
}

/// A file written in whole pieces (`progress.csv` rows, TensorBoard records), one `write` call and a flush each, so
/// it can be followed while training runs. A piece that cannot be written (disk full) is left out: whatever part
/// of it reached the file is cut off again, so the file only ever holds whole pieces; the failure is counted in
/// the given metric and logged through a [`FailureLog`], and later pieces are appended once there is space.
#[derive(Debug)]
pub(crate) struct WholeAppends {
    file: std::fs::File,
    path: PathBuf,
    /// Bytes of the whole pieces: what a failed append cuts the file back to.
    len: u64,
    failures: FailureLog,
    /// Counter of failed appends.
    failure_metric: &'static str,
}

impl WholeAppends {
    /// Appends to `file` at `path`, which holds `len` bytes of whole pieces; `what` names the file in the log.
    pub(crate) fn new(
        file: std::fs::File,
        path: PathBuf,
        len: u64,
        what: &'static str,
        failure_metric: &'static str,
    ) -> Self {
        Self { file, path, len, failures: FailureLog::new(what), failure_metric }
    }

    /// The file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of whole pieces in the file.
    #[cfg(test)]
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Appends `bytes` whole, or (on failure, counted and logged) not at all; true when written.
    pub(crate) fn append(&mut self, bytes: &[u8]) -> bool {
        use std::io::Seek;
        match self.file.write_all(bytes).and_then(|()| self.file.flush()) {
            Ok(()) => {
                self.len += bytes.len() as u64;
                self.failures.succeeded();
                true
            }
            Err(e) => {
                metrics::counter!(self.failure_metric).increment(1);
                self.failures.failed(&Error::io(&self.path)(e));
                let cut = self.file.set_len(self.len).and_then(|()| self.file.seek(std::io::SeekFrom::Start(self.len)));
                if let Err(e) = cut {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot cut off a partly written piece");
                    // Where the file really ends now, so a later cut never reaches into whole pieces.
                    self.len = self.file.stream_position().unwrap_or(self.len);
                }
                false
            }
        }
    }
}

/// Logs repeated failures of one kind of write (a periodic checkpoint, a progress row) without flooding the log:
/// the first failure, each failure whose error differs from the last one logged (paths aside), and otherwise at
/// most one a minute, with the number left out in between; likewise, at most once a minute, that writes succeed
/// again. A nearly full disk, where writes fail and succeed by turns, logs at most two lines a minute.
#[derive(Debug)]
pub(crate) struct FailureLog {
    /// What is written, for the log lines.
    what: &'static str,
    /// When the last failure was logged, and its error without the path.
    last: Option<(Instant, String)>,
    /// Failures not logged since the last one logged.
    suppressed: u64,
    /// Failures since the last success.
    failures: u64,
    /// When a success after failures was last logged.
    recovered: Option<Instant>,
}

impl FailureLog {
    /// Repeats are logged at most once per this interval.
    const INTERVAL: Duration = Duration::from_secs(60);

    /// A log for writes of `what`.
    pub(crate) fn new(what: &'static str) -> Self {
        Self { what, last: None, suppressed: 0, failures: 0, recovered: None }
    }

    /// Records a failed write; logs it unless the same error was logged less than a minute ago.
    pub(crate) fn failed(&mut self, error: &Error) {
        self.failures += 1;
        let kind = match error {
            Error::Io { source, .. } => source.to_string(),
            Error::Checkpoint { reason, .. } => reason.clone(),
            other => other.to_string(),
        };
        if self.last.as_ref().is_some_and(|(at, k)| *k == kind && at.elapsed() < Self::INTERVAL) {
            self.suppressed += 1;
            return;
        }
        tracing::error!(
            error = %error,
            failures = self.failures,
            not_logged = self.suppressed,
            "{}: write failed; training goes on (repeats of this error are logged at most once a minute)",
            self.what
        );
        self.last = Some((Instant::now(), kind));
        self.suppressed = 0;
    }

    /// Records a successful write; after failures, logs that writes succeed again (at most once a minute).
    pub(crate) fn succeeded(&mut self) {
        if self.failures == 0 {
            return;
        }
        if self.recovered.is_none_or(|at| at.elapsed() >= Self::INTERVAL) {
            tracing::info!(failures = self.failures, "{}: written again after failures", self.what);
            self.recovered = Some(Instant::now());
        }
        self.failures = 0;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_atomic_write_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // The rename fails: a non-empty directory holds the target's name.
        let target = dir.path().join("model.safetensors");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("inside"), b"x").unwrap();
        assert!(write_atomic(&target, b"data").is_err());
        assert!(!dir.path().join("model.tmp").exists(), "the temporary file was left behind");

        let ok = dir.path().join("config.toml");
        write_atomic(&ok, b"a = 1").unwrap();
        assert_eq!(std::fs::read(&ok).unwrap(), b"a = 1");
        assert!(!dir.path().join("config.tmp").exists());
    }
}
