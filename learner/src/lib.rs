//! The learner: PPO (clipped and adaptive-KL objectives) over rollouts from actors, publishing new weights.
//!
//! Three parts, one folder each: [`server`] (the gRPC service actors talk to: authentication, validation, the
//! hand-off to the trainer), [`run`] (the loop that turns queued rollouts into updates, checkpoints, the run
//! directory and progress output) and [`update`] (one PPO update: GAE, the loss and its gradients, the optimiser,
//! the CPU and candle backends). [`session`] puts a run together (directory, trainer, outputs) for `serve` and
//! local `train` alike. [`dashboard`] is the live web page of a run. `eval`, `render` and `env_step` are the
//! tools that use a trained policy or an env.

#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod config;
pub mod dashboard;
pub mod env_step;
pub mod episodes;
pub mod error;
pub mod eval;
pub mod queue;
pub mod render;
pub mod run;
pub mod server;
pub mod session;
pub mod update;

pub use error::{Error, Result};

#[cfg(test)]
mod test_support;
