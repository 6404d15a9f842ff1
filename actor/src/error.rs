//! The actor's error type.

/// Everything that can go wrong in an actor.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The environment could not be built.
    #[error(transparent)]
    Env(#[from] common::env::EnvError),
    /// The env wrote an observation its space cannot hold.
    #[error("the env's observation does not fit its space: {0}")]
    Observation(#[from] common::obs::NotUint8),
    /// A policy snapshot could not be loaded or run.
    #[error("policy error: {0}")]
    Policy(#[from] common::policy::PolicyError),
    /// Bad options (URL, TLS files, token).
    #[error("{0}")]
    Config(String),
    /// The learner refused this actor (wrong env, token or protocol); retrying will not help.
    #[error("learner refused the actor: {0}")]
    Refused(String),
    /// The learner cannot be reached right now; retried with backoff.
    #[error("{0}")]
    Unavailable(String),
    /// The sampler thread stopped.
    #[error("the sampler thread stopped")]
    SamplerStopped,
}
