//! The actor's error type.

/// Everything that can go wrong in an actor.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The environment could not be built.
    #[error(transparent)]
    Env(#[from] common::env::EnvError),
    /// A policy snapshot could not be loaded or run.
    #[error("policy error: {0}")]
    Policy(#[from] common::policy::PolicyError),
}
