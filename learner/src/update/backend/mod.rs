//! Where the PPO update runs. Two implementations of one contract: `fused` (hand-derived gradients on flat host
//! buffers, the fast path on CPU) and `candle` (candle autograd on any device, CUDA included). Both start from the
//! same initial weights and shuffle minibatches from the same RNG, so a run is the same run on either, up to
//! float rounding; the golden tests hold both to PyTorch's numbers.

pub mod candle;
mod fused;

pub use self::candle::CandleBackend;
pub use self::fused::FusedBackend;

use crate::config::{BackendKind, ConfigError, DeviceKind, TrainConfig};
use crate::error::Result;
use crate::update::optim::AdamState;
use crate::update::ppo::{EpochPlan, EpochStats, HostBatch, LossCoefs};
use common::model::{Core, Encoder, ModelSpec};
use common::net::ActorCriticNet;
use rand_chacha::ChaCha8Rng;

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

    /// The parameters as one flat vector in the network's layout ([`ActorCriticNet`]).
    fn params(&self) -> Result<Vec<f32>>;

    /// Replaces every parameter with the flat vector `params`; fails if its length does not fit.
    fn load_params(&mut self, params: &[f32]) -> Result<()>;

    /// Optimiser state for a checkpoint, in the same layout.
    fn optimizer_state(&self) -> Result<AdamState>;

    /// Optimiser steps taken.
    fn optimizer_steps(&self) -> u64;

    /// Restores a checkpointed optimiser state.
    fn load_optimizer_state(&mut self, state: AdamState) -> Result<()>;
}

/// Whether a backend (`fused` or not) runs the model `spec`: a spec it cannot run is a config error naming the
/// backend and the spec. Both `fused` and `candle` run MLP and conv encoders, separate or shared trunks and any
/// head; only `fused` runs a recurrent core.
pub fn check_supported(spec: &ModelSpec, fused: bool) -> Result<()> {
    // Exhaustive on purpose: a new encoder or core kind stops the build here until the backends say whether they
    // run it.
    match spec.encoder {
        Encoder::Mlp { .. } | Encoder::Conv { .. } => {}
    }
    match (&spec.core, fused) {
        (Core::None, _) | (Core::Lstm { .. } | Core::Gru { .. }, true) => Ok(()),
        (Core::Lstm { .. } | Core::Gru { .. }, false) => Err(ConfigError::Invalid {
            key: "backend",
            reason: format!(
                "the candle backend does not run the model {} (a recurrent core trains on backend = \"fused\", \
                 on the CPU)",
                spec.describe()
            ),
        }
        .into()),
    }
}

/// The backend `cfg` asks for (`auto`: fused on CPU, candle elsewhere) for the model `spec`, holding its initial
/// parameters drawn from `seed` ([`ActorCriticNet::init`]); the spec's flat-buffer network comes back with it.
pub fn create(cfg: &TrainConfig, spec: &ModelSpec, seed: u64) -> Result<(ActorCriticNet, Box<dyn Backend>)> {
    let device = cfg.device_kind()?;
    let fused = match cfg.backend {
        BackendKind::Fused => true,
        BackendKind::Candle => false,
        BackendKind::Auto => device == DeviceKind::Cpu,
    };
    check_supported(spec, fused)?;
    let net = ActorCriticNet::new(spec).map_err(|e| ConfigError::Invalid { key: "model", reason: e.to_string() })?;
    let params = net.init(seed);
    let backend: Box<dyn Backend> = match fused {
        true => Box::new(FusedBackend::new(&net, params, cfg.threads)?),
        false => Box::new(CandleBackend::on(&net, &params, device)?),
    };
    Ok((net, backend))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Both backends run a shared trunk and every head.
    #[test]
    fn both_backends_run_shared_trunks_and_every_head() {
        for backend in [BackendKind::Fused, BackendKind::Candle] {
            let mut cfg = TrainConfig { backend, ..TrainConfig::default() };
            cfg.model.shared_trunk = true;
            let spec = ModelSpec::resolve(
                &cfg.model,
                &common::env::Space::unbounded(4),
                &common::env::Space::Discrete { n: 2 },
            )
            .unwrap();
            assert!(create(&cfg, &spec, 1).is_ok(), "{backend:?} runs a shared trunk");
        }
        let cfg = TrainConfig::default();
        let spec = ModelSpec::resolve(
            &cfg.model,
            &common::env::Space::unbounded(4),
            &common::env::Space::MultiDiscrete { nvec: vec![3, 2] },
        )
        .unwrap();
        assert!(create(&cfg, &spec, 1).is_ok(), "every head runs on the default backend");
    }

    /// A recurrent core trains on the fused backend; candle refuses it with a config error naming both.
    #[test]
    fn only_the_fused_backend_runs_a_recurrent_core() {
        let mut cfg = TrainConfig::default();
        cfg.model.shared_trunk = true;
        cfg.model.core = common::model::CoreKind::Lstm;
        let (obs, act) = (common::env::Space::unbounded(4), common::env::Space::Discrete { n: 2 });
        let spec = ModelSpec::resolve(&cfg.model, &obs, &act).unwrap();
        assert!(create(&cfg, &spec, 1).is_ok(), "auto on the CPU is fused");
        let candle = TrainConfig { backend: BackendKind::Candle, ..cfg };
        let err = create(&candle, &spec, 1).err().unwrap().to_string();
        assert!(err.contains("candle backend does not run the model") && err.contains("lstm(128)"), "{err}");
    }
}
