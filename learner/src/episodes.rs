//! Episode bookkeeping: how many episodes finished, the window of the latest ones that the mean return (and the
//! target) is computed over, and the optional `episode_log` file.

use crate::error::{Error, Result};
use common::env::EpisodeStats;
use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;

/// The window of latest episodes in numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowStats {
    /// Mean return.
    pub mean_return: f64,
    /// Standard deviation of the returns (population).
    pub return_std: f64,
    /// Mean length.
    pub mean_length: f64,
}

/// Finished episodes of a run.
pub struct EpisodeBook {
    finished: u64,
    /// (return, length) of the last `window` episodes, oldest first.
    recent: VecDeque<(f64, u32)>,
    window: usize,
    /// `episode_log`: one line per episode (Unix time, return, length), if configured.
    log: Option<(PathBuf, std::io::BufWriter<std::fs::File>)>,
}

impl EpisodeBook {
    /// An empty book with a window of `window` episodes, appending to `log` if given.
    pub fn new(window: usize, log: Option<&PathBuf>) -> Result<Self> {
        let log = match log {
            Some(path) => {
                let file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(Error::io(path))?;
                Some((path.clone(), std::io::BufWriter::new(file)))
            }
            None => None,
        };
        Ok(Self { finished: 0, recent: VecDeque::with_capacity(window), window, log })
    }

    /// Records finished episodes (histograms, window, log).
    pub fn record<'a>(&mut self, episodes: impl IntoIterator<Item = &'a EpisodeStats>) -> Result<()> {
        for ep in episodes {
            metrics::histogram!(common::metrics::EPISODE_RETURN).record(ep.episode_return);
            metrics::histogram!(common::metrics::EPISODE_LENGTH).record(ep.length as f64);
            self.finished += 1;
            if self.recent.len() == self.window {
                self.recent.pop_front();
            }
            self.recent.push_back((ep.episode_return, ep.length));
            if let Some((path, log)) = &mut self.log {
                writeln!(log, "{:.6} {} {}", common::policy::unix_now(), ep.episode_return, ep.length)
                    .map_err(Error::io(path.clone()))?;
            }
        }
        if let Some((path, log)) = &mut self.log {
            log.flush().map_err(Error::io(path.clone()))?;
        }
        Ok(())
    }

    /// Episodes finished so far.
    pub fn finished(&self) -> u64 {
        self.finished
    }

    /// The window's (return, length) pairs, oldest first.
    pub fn recent(&self) -> impl Iterator<Item = (f64, u32)> + '_ {
        self.recent.iter().copied()
    }

    /// The window's mean return, the standard deviation of its returns, and its mean length (None before the
    /// first episode ends).
    pub fn window_stats(&self) -> Option<WindowStats> {
        if self.recent.is_empty() {
            return None;
        }
        let k = self.recent.len() as f64;
        let mean_return = self.recent.iter().map(|e| e.0).sum::<f64>() / k;
        let var = self.recent.iter().map(|e| (e.0 - mean_return).powi(2)).sum::<f64>() / k;
        let mean_length = self.recent.iter().map(|e| e.1 as f64).sum::<f64>() / k;
        Some(WindowStats { mean_return, return_std: var.sqrt(), mean_length })
    }

    /// Continues from a checkpoint's counters: `finished` episodes, the latest of them in `recent`.
    pub fn restore(&mut self, finished: u64, recent: Vec<(f64, u32)>) {
        let skip = recent.len().saturating_sub(self.window);
        self.finished = finished;
        self.recent = recent.into_iter().skip(skip).collect();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn window_means_and_restore() {
        let mut book = EpisodeBook::new(2, None).unwrap();
        assert_eq!(book.window_stats(), None);
        let eps =
            [(1.0, 10), (3.0, 30), (5.0, 50)].map(|(r, l)| EpisodeStats { env_index: 0, episode_return: r, length: l });
        book.record(&eps).unwrap();
        let stats = WindowStats { mean_return: 4.0, return_std: 1.0, mean_length: 40.0 };
        assert_eq!((book.finished(), book.window_stats()), (3, Some(stats)));
        book.restore(7, vec![(1.0, 1), (2.0, 2), (3.0, 3)]);
        assert_eq!((book.finished(), book.recent().collect::<Vec<_>>()), (7, vec![(2.0, 2), (3.0, 3)]));
    }
}
