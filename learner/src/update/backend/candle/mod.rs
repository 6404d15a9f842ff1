//! The candle backend: the model as candle variables, the loss differentiated by candle's autograd. Runs on any
//! device candle supports (the CUDA learner uses it). This folder is the only place of candle in the project.

pub mod device;
pub mod loss;
pub mod model;
pub mod optim;

use self::loss::{Batch, batch_kl, minibatch_is_finite, minibatch_step};
use self::model::{ActorCritic, set_params, sorted_vars};
use self::optim::Adam;
use super::Backend;
use crate::config::{ConfigError, DeviceKind};
use crate::error::{Error, Result};
use crate::update::optim::AdamState;
use crate::update::ppo::{EpochPlan, EpochStats, HostBatch, LossCoefs, MinibatchStep, StepOutcome, run_epochs};
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use common::model::Head;
use common::net::ActorCriticNet;
use rand_chacha::ChaCha8Rng;

/// Candle variables, model and Adam on one device.
pub struct CandleBackend {
    net: ActorCriticNet,
    varmap: VarMap,
    model: ActorCritic,
    optimizer: Adam,
    device: Device,
}

impl From<candle_core::Error> for Error {
    /// candle's errors reach the rest of the learner as text: candle's types stay in this folder.
    fn from(e: candle_core::Error) -> Self {
        Error::Tensor(e.to_string())
    }
}

impl CandleBackend {
    /// The model of `net` holding the flat parameters `params`, on the device `kind` names.
    pub fn on(net: &ActorCriticNet, params: &[f32], kind: DeviceKind) -> Result<Self> {
        let device = device::open(kind).map_err(|e| ConfigError::Invalid { key: "device", reason: e.to_string() })?;
        Self::new(net, params, device)
    }

    /// The model of `net` holding the flat parameters `params`, on `device`.
    pub fn new(net: &ActorCriticNet, params: &[f32], device: Device) -> Result<Self> {
        let (varmap, model) = ActorCritic::with_params(net, params, &device)?;
        let optimizer = Adam::new(sorted_vars(&varmap)?, 0.0)?;
        Ok(Self { net: net.clone(), varmap, model, optimizer, device })
    }

    fn discrete(&self) -> bool {
        !matches!(self.net.head(), Head::Gaussian { .. })
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
        let batch_on_device = Batch::from_host(batch, self.discrete(), &self.device)?;
        self.optimizer.lr = lr;
        let mut stepper =
            CandleStep { backend: self, batch: &batch_on_device, coefs, max_grad_norm: plan.max_grad_norm };
        Ok(run_epochs(batch, plan, rng, &mut stepper)?)
    }

    fn batch_kl(&mut self, batch: &HostBatch) -> Result<f64> {
        Ok(batch_kl(&self.model, &Batch::from_host(batch, self.discrete(), &self.device)?)?)
    }

    fn params(&self) -> Result<Vec<f32>> {
        let vars = sorted_vars(&self.varmap)?;
        Ok(model::flatten(&vars.iter().map(|(_, v)| v.as_tensor().clone()).collect::<Vec<_>>())?)
    }

    fn load_params(&mut self, params: &[f32]) -> Result<()> {
        self.net.check_len(params)?;
        Ok(set_params(&self.net, &sorted_vars(&self.varmap)?, params)?)
    }

    fn optimizer_state(&self) -> Result<AdamState> {
        Ok(self.optimizer.state()?)
    }

    fn optimizer_steps(&self) -> u64 {
        self.optimizer.steps()
    }

    fn load_optimizer_state(&mut self, state: AdamState) -> Result<()> {
        self.net.check_len(&state.m)?;
        self.net.check_len(&state.v)?;
        Ok(self.optimizer.load_state(state)?)
    }
}
