//! The learner's error type.

use crate::config::ConfigError;

/// Everything that can go wrong in the learner.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A tensor operation of the candle backend failed (its error as text: candle stays in its folder).
    #[error("tensor error: {0}")]
    Tensor(String),
    /// Weights could not be encoded or decoded.
    #[error(transparent)]
    Policy(#[from] common::policy::PolicyError),
    /// Tensors could not be encoded or decoded.
    #[error(transparent)]
    Codec(#[from] common::codec::CodecError),
    /// Parameters that do not fit the network.
    #[error(transparent)]
    Layout(#[from] common::net::LayoutError),
    /// The env's spaces are not known or not usable.
    #[error(transparent)]
    EnvSpec(#[from] crate::config::EnvSpecError),
    /// `eval` or `render` of a policy for an env the learner does not build in.
    #[error(
        "{env} is not a built-in env; play the policy in gymnasium with \
         `proxima-actor eval --checkpoint {} --env {env}` (or `proxima-actor render`)", path.display()
    )]
    NotBuiltin {
        /// The env id.
        env: String,
        /// The policy file.
        path: std::path::PathBuf,
    },
    /// Environment construction failed.
    #[error(transparent)]
    Env(#[from] common::env::EnvError),
    /// A rollout failed validation.
    #[error("invalid rollout: {0}")]
    Rollout(#[from] common::rollout::RolloutError),
    /// File system error, with the path.
    #[error("{path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    /// A checkpoint's bytes are damaged: corrupt, truncated, not a checkpoint, or holding non-finite values.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: std::path::PathBuf, reason: String },
    /// A sound checkpoint of another run: another env, model shape or normalisation than the config's.
    #[error("checkpoint {path}: {reason}")]
    CheckpointMismatch { path: std::path::PathBuf, reason: String },
    /// A worker thread panicked or disappeared.
    #[error("{0}")]
    Internal(String),
    /// Missing or wrong token.
    #[error("{0}")]
    Unauthenticated(String),
    /// The actor's env, spaces or protocol differ from the learner's.
    #[error("{0}")]
    Mismatch(String),
    /// A rollout names an actor id the learner did not hand out.
    #[error("actor_id: unknown actor id {0}; register first")]
    UnknownActor(u64),
    /// A rollout claims a policy version the learner has not published.
    #[error("policy_version: {got} is newer than the learner's newest version {current}")]
    FutureVersion { got: u64, current: u64 },
    /// The learner cannot take the request now (shutting down).
    #[error("{0}")]
    Unavailable(String),
    /// `actor_name` above the limit.
    #[error("{0}")]
    BadName(String),
    /// The registry is full.
    #[error("{0}")]
    TooManyActors(String),
    /// The TLS certificate or key cannot serve: missing, not the PEM expected, or refused by TLS.
    #[error("{0}")]
    Tls(String),
}

impl Error {
    /// The `reason` label under which a rejection of this kind is counted, if it is a rejection of input.
    pub fn rejection_reason(&self) -> Option<&'static str> {
        use common::metrics::reason;
        use common::rollout::RolloutErrorKind;
        Some(match self {
            Error::Unauthenticated(_) => reason::UNAUTHENTICATED,
            Error::Mismatch(_) => reason::MISMATCH,
            Error::UnknownActor(_) => reason::UNKNOWN_ACTOR,
            Error::FutureVersion { .. } => reason::FUTURE_VERSION,
            Error::BadName(_) => reason::BAD_NAME,
            Error::TooManyActors(_) => reason::TOO_MANY_ACTORS,
            Error::Rollout(e) => match e.kind {
                RolloutErrorKind::Shape => reason::SHAPE,
                RolloutErrorKind::NonFinite => reason::NON_FINITE,
                RolloutErrorKind::Action => reason::ACTION,
                RolloutErrorKind::OutOfRange => reason::OUT_OF_RANGE,
            },
            _ => return None,
        })
    }
}

/// The one place where learner errors become gRPC statuses.
impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        let msg = e.to_string();
        let reason = e.rejection_reason();
        let status = match e {
            Error::Unauthenticated(_) => tonic::Status::unauthenticated(msg),
            Error::Mismatch(_) => tonic::Status::failed_precondition(msg),
            Error::Rollout(_) | Error::UnknownActor(_) | Error::FutureVersion { .. } | Error::BadName(_) => {
                tonic::Status::invalid_argument(msg)
            }
            Error::TooManyActors(_) => tonic::Status::resource_exhausted(msg),
            Error::Unavailable(_) => tonic::Status::unavailable(msg),
            _ => tonic::Status::internal(msg),
        };
        match reason {
            Some(reason) => common::wire::with_reason(status, reason),
            None => status,
        }
    }
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
