//! The learner's error type.

use crate::config::ConfigError;

/// Everything that can go wrong in the learner.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A tensor operation failed.
    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),
    /// Weights could not be encoded or decoded.
    #[error(transparent)]
    Policy(#[from] common::policy::PolicyError),
    /// Environment construction failed.
    #[error(transparent)]
    Env(#[from] common::env::EnvError),
    /// A rollout failed validation.
    #[error("invalid rollout: {0}")]
    Rollout(#[from] common::rollout::RolloutError),
    /// File system error, with the path.
    #[error("{path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    /// A checkpoint is unreadable or does not match the run.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: std::path::PathBuf, reason: String },
    /// An actor failed.
    #[error("actor failed: {0}")]
    Actor(#[from] actor::Error),
    /// A worker thread panicked or disappeared.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<std::path::PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

/// The learner's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
