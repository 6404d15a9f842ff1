//! The actor: steps a vectorised environment with the latest policy it has and hands rollouts to a sink (a
//! channel into the learner in local mode).

#![deny(clippy::unwrap_used, clippy::expect_used)]

mod error;
mod sampler;

pub use error::Error;
pub use sampler::{RolloutSink, Sampler, SamplerConfig, run_sampler};
