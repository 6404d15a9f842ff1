//! Where the PPO update runs. Two implementations of one contract: `fused` (hand-derived gradients on flat host
//! buffers, the fast path on CPU) and `candle` (candle autograd on any device, CUDA included). Both start from the
//! same initial weights and shuffle minibatches from the same RNG, so a run is the same run on either, up to
//! float rounding; the golden tests hold both to PyTorch's numbers.

mod candle;
mod fused;

pub use self::candle::CandleBackend;
pub use self::fused::FusedBackend;

use crate::config::{BackendKind, TrainConfig};
use crate::error::Result;
use crate::optim::AdamState;
use crate::ppo::{EpochPlan, EpochStats, HostBatch, LossCoefs};
use candle_core::Tensor;
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;

/// The model, its optimiser and the update that trains them.
pub trait Backend: Send {
    /// State values of `n` normalised observation rows.
    fn values(&mut self, obs: &[f32], n: usize) -> Result<Vec<f32>>;

    /// Runs the minibatch epochs of one update over `batch` at learning rate `lr`.
    fn run_epochs(
        &mut self,
        batch: &HostBatch,
        coefs: &LossCoefs,
        plan: &EpochPlan,
        lr: f64,
        rng: &mut ChaCha8Rng,
    ) -> Result<EpochStats>;

    /// k3 estimate of KL(behaviour ‖ current) over `batch`.
    fn batch_kl(&mut self, batch: &HostBatch) -> Result<f64>;

    /// Parameters by name, sorted.
    fn params(&self) -> Result<Vec<(String, Tensor)>>;

    /// Replaces every parameter; fails naming a missing or misshapen one.
    fn load_params(&mut self, params: &HashMap<String, Tensor>) -> std::result::Result<(), String>;

    /// Optimiser state for a checkpoint.
    fn optimizer_state(&self) -> Result<AdamState>;

    /// Optimiser steps taken.
    fn optimizer_steps(&self) -> u64;

    /// Restores a checkpointed optimiser state.
    fn load_optimizer_state(&mut self, state: AdamState) -> std::result::Result<(), String>;
}

/// The backend `cfg` asks for, initialised from its seed (`auto`: fused on CPU, candle elsewhere).
pub fn create(cfg: &TrainConfig, seed: u64) -> Result<Box<dyn Backend>> {
    let spec = common::env::make(&cfg.env)?;
    let (obs_dim, space) = (spec.observation_space().flat_dim(), spec.action_space());
    let device = common::device::parse_device(&cfg.device)
        .map_err(|reason| crate::config::ConfigError::Invalid { key: "device", reason })?;
    let candle = CandleBackend::new(&cfg.model, obs_dim, &space, seed, device)?;
    let fused = match cfg.backend {
        BackendKind::Fused => true,
        BackendKind::Candle => false,
        BackendKind::Auto => candle.is_cpu(),
    };
    if !fused {
        return Ok(Box::new(candle));
    }
    let params: HashMap<String, Tensor> = candle.params()?.into_iter().collect();
    Ok(Box::new(FusedBackend::new(&cfg.model, obs_dim, &space, &params, cfg.threads).map_err(crate::Error::Internal)?))
}
