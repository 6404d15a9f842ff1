//! The candle backend: the model as candle variables, the loss differentiated by candle's autograd. Runs on any
//! device candle supports (the CUDA learner uses it).

use super::Backend;
use crate::error::Result;
use crate::optim::{Adam, AdamState};
use crate::ppo::{
    Batch, EpochPlan, EpochStats, HostBatch, LossCoefs, MinibatchStep, StepOutcome, batch_kl, minibatch_is_finite,
    minibatch_step, run_epochs,
};
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use common::env::Space;
use common::model::{ActorCritic, ModelConfig, sorted_vars};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;

/// Candle variables, model and Adam on one device.
pub struct CandleBackend {
    varmap: VarMap,
    model: ActorCritic,
    optimizer: Adam,
    device: Device,
    discrete: bool,
}

impl CandleBackend {
    /// A freshly initialised model (see [`ActorCritic::init`]) on `device`.
    pub fn new(cfg: &ModelConfig, obs_dim: usize, space: &Space, seed: u64, device: Device) -> Result<Self> {
        let (varmap, model) = ActorCritic::init(cfg, obs_dim, space, seed, &device)?;
        let optimizer = Adam::new(sorted_vars(&varmap)?, 0.0, 1e-5)?;
        Ok(Self { varmap, model, optimizer, device, discrete: matches!(space, Space::Discrete { .. }) })
    }

    /// True when the model lives in host memory.
    pub fn is_cpu(&self) -> bool {
        self.device.is_cpu()
    }
}

/// The candle backend's minibatch step over one batch on the device, for the guarded epoch loop.
struct CandleStep<'a> {
    backend: &'a mut CandleBackend,
    batch: &'a Batch,
    coefs: &'a LossCoefs,
    max_grad_norm: f64,
}

impl CandleStep<'_> {
    fn rows(&self, idx: &[u32]) -> candle_core::Result<Batch> {
        self.batch.select(&Tensor::from_slice(idx, idx.len(), &self.backend.device)?)
    }
}

impl MinibatchStep for CandleStep<'_> {
    type Error = candle_core::Error;

    fn step(&mut self, idx: &[u32]) -> candle_core::Result<StepOutcome> {
        let mb = self.rows(idx)?;
        let b = &mut *self.backend;
        minibatch_step(&b.model, &mut b.optimizer, &mb, self.coefs, self.max_grad_norm)
    }

    fn is_finite_on(&mut self, idx: &[u32]) -> candle_core::Result<bool> {
        let mb = self.rows(idx)?;
        minibatch_is_finite(&self.backend.model, &self.backend.optimizer, &mb, self.coefs)
    }
}

impl Backend for CandleBackend {
    fn values(&mut self, obs: &[f32], n: usize) -> Result<Vec<f32>> {
        let x = Tensor::from_slice(obs, (n, obs.len() / n.max(1)), &self.device)?;
        Ok(self.model.value(&x)?.to_vec1::<f32>()?)
    }

    fn run_epochs(
        &mut self,
        batch: &HostBatch,
        coefs: &LossCoefs,
        plan: &EpochPlan,
        lr: f64,
        rng: &mut ChaCha8Rng,
    ) -> Result<EpochStats> {
        let batch_on_device = Batch::from_host(batch, self.discrete, &self.device)?;
        self.optimizer.lr = lr;
        let mut stepper =
            CandleStep { backend: self, batch: &batch_on_device, coefs, max_grad_norm: plan.max_grad_norm };
        Ok(run_epochs(batch.len(), &batch.sources, plan, rng, &mut stepper)?)
    }

    fn batch_kl(&mut self, batch: &HostBatch) -> Result<f64> {
        Ok(batch_kl(&self.model, &Batch::from_host(batch, self.discrete, &self.device)?)?)
    }

    fn params(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(sorted_vars(&self.varmap)?.into_iter().map(|(n, v)| (n, v.as_tensor().clone())).collect())
    }

    fn load_params(&mut self, params: &HashMap<String, Tensor>) -> std::result::Result<(), String> {
        for (name, var) in sorted_vars(&self.varmap).map_err(|e| e.to_string())? {
            let saved = params.get(&name).ok_or_else(|| format!("parameter {name} is missing"))?;
            if saved.dims() != var.dims() {
                return Err(format!(
                    "parameter {name} has shape {:?}, the configured model needs {:?}",
                    saved.dims(),
                    var.dims()
                ));
            }
            var.set(&saved.to_device(&self.device).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn optimizer_state(&self) -> Result<AdamState> {
        Ok(self.optimizer.state())
    }

    fn optimizer_steps(&self) -> u64 {
        self.optimizer.steps()
    }

    fn load_optimizer_state(&mut self, state: AdamState) -> std::result::Result<(), String> {
        self.optimizer.load_state(state).map_err(|e| e.to_string())
    }
}
