//! The learner: PPO (clipped and adaptive-KL objectives) over rollouts from actors, publishing new weights.

#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod auth;
pub mod backend;
pub mod checkpoint;
pub mod config;
pub mod env_step;
pub mod error;
pub mod eval;
pub mod gae;
pub mod optim;
pub mod plot;
pub mod ppo;
pub mod progress;
pub mod render;
pub mod run_dir;
pub mod serve;
pub mod service;
pub mod trainer;
pub mod training;

pub use error::{Error, Result};

#[cfg(test)]
mod test_support;
