//! The actor: steps a vectorised environment with the latest policy it has and streams rollouts to the learner
//! (or, in local mode, hands them to a channel in the same process).

#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod client;
mod error;
mod sampler;

pub use error::Error;
pub use sampler::{PolicyWait, RolloutSink, Sampler, SamplerConfig, SinkClosed, Stamped, run_sampler};
