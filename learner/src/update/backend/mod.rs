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

    /// The fused backend replays a recurrent batch as the network does, on a shared core and on separate ones: a
    /// batch whose log-probs are the network's own has zero KL (every sequence from its initial state, a start
    /// inside one), and the values of single rows are the network's from a zero state.
    #[test]
    fn the_fused_backend_replays_recurrent_batches_as_the_network_does() {
        use crate::update::ppo::{HostBatch, SeqLayout};
        use common::net::{NetTrace, Sequences};
        for shared in [true, false] {
            let mut cfg = TrainConfig::default();
            cfg.model.shared_trunk = shared;
            (cfg.model.core, cfg.model.core_size, cfg.model.hidden_sizes) = (common::model::CoreKind::Gru, 5, vec![6]);
            let (obs_space, act) = (common::env::Space::unbounded(3), common::env::Space::Discrete { n: 3 });
            let spec = ModelSpec::resolve(&cfg.model, &obs_space, &act).unwrap();
            let (net, mut backend) = create(&cfg, &spec, 2).unwrap();
            let params = backend.params().unwrap();
            let (steps, envs, s) = (4, 3, net.state_dim());
            let n = steps * envs;
            let obs: Vec<f32> = (0..n * 3).map(|i| ((i * 7 % 11) as f32 - 5.0) / 5.0).collect();
            let initial_states: Vec<f32> = (0..envs * s).map(|i| ((i % 9) as f32 - 4.0) / 10.0).collect();
            let starts: Vec<bool> = (0..n).map(|row| row == 2 * envs + 1).collect();
            let actions: Vec<f32> = (0..n).map(|i| (i % 3) as f32).collect();
            let mut trace = NetTrace::default();
            net.forward_seq(&params, &obs, Sequences { steps, state0: &initial_states, starts: &starts }, &mut trace);
            let mut log_p = [0.0f32; 3];
            let log_probs: Vec<f32> = trace
                .head()
                .chunks_exact(3)
                .zip(&actions)
                .map(|(z, &a)| {
                    common::distributions::log_softmax(z, &mut log_p);
                    log_p[a as usize]
                })
                .collect();
            let batch = HostBatch {
                obs: obs.clone(),
                actions,
                log_probs,
                advantages: vec![0.0; n],
                returns: vec![0.0; n],
                values: vec![0.0; n],
                sources: Vec::new(),
                seq: Some(SeqLayout {
                    steps,
                    state_dim: s,
                    sequences: (0..envs).map(|b| (b, envs)).collect(),
                    initial_states,
                    starts,
                }),
            };
            let kl = backend.batch_kl(&batch).unwrap();
            assert!(kl.abs() < 1e-6, "shared {shared}: the policy's own batch has KL {kl}");
            let values = backend.values(&obs, n).unwrap();
            net.forward(&params, &obs, n, &mut trace);
            let gap = values.iter().zip(trace.values()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(gap < 1e-6, "shared {shared}: values differ by {gap}");
        }
    }

    /// A conv trunk's gradient on the backend's two threads (each thread running the convolutions over half of
    /// the samples, chunk by chunk, the filter gradients summed in two halves) is the one-thread gradient: a
    /// channels-first observation (an 8×8 filter: runs of 8) then a channels-last layer, shared by both heads, with
    /// several chunks in each half.
    #[test]
    fn a_conv_trunk_has_the_same_gradient_on_two_threads() {
        use common::model::{ConvLayer, LayoutChoice};
        let mut cfg = TrainConfig::default();
        cfg.model.shared_trunk = true;
        cfg.model.image_layout = LayoutChoice::Chw;
        cfg.model.conv = vec![
            ConvLayer { out_channels: 6, kernel: 8, stride: 4 },
            ConvLayer { out_channels: 5, kernel: 3, stride: 1 },
        ];
        cfg.model.hidden_sizes = vec![16];
        let obs_space =
            common::env::Space::shaped(vec![0.0], vec![1.0], vec![3, 44, 44], common::env::Dtype::Float32).unwrap();
        let spec = ModelSpec::resolve(&cfg.model, &obs_space, &common::env::Space::Discrete { n: 4 }).unwrap();
        let (net, backend) = create(&cfg, &spec, 3).unwrap();
        let params = backend.params().unwrap();
        let n = 64;
        let wave = |i: usize, m: usize, scale: f32| ((i * 7919 % m) as f32 / m as f32 - 0.5) * scale;
        let batch = HostBatch {
            obs: (0..n * net.obs_dim()).map(|i| wave(i, 101, 2.0)).collect(),
            actions: (0..n).map(|i| (i % 4) as f32).collect(),
            log_probs: (0..n).map(|i| wave(i, 13, 1.0) - 1.4).collect(),
            advantages: (0..n).map(|i| wave(i, 17, 2.0)).collect(),
            returns: (0..n).map(|i| wave(i, 19, 3.0)).collect(),
            values: (0..n).map(|i| wave(i, 23, 3.0)).collect(),
            sources: Vec::new(),
            seq: None,
        };
        let idx: Vec<u32> = (0..n as u32).collect();
        let c = LossCoefs {
            objective: crate::config::Objective::Clip,
            clip_coef: 0.2,
            clip_vloss: true,
            norm_adv: true,
            ent_coef: 0.01,
            vf_coef: 0.5,
            beta: 0.0,
        };
        let mut one = FusedBackend::new(&net, params.clone(), 1).unwrap();
        let mut two = FusedBackend::new(&net, params, 2).unwrap();
        let loss_one = one.loss_and_gradient(&batch, &idx, &c).loss;
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        let loss_two = pool.install(|| two.loss_and_gradient(&batch, &idx, &c).loss);
        assert!((loss_one - loss_two).abs() < 1e-6, "loss {loss_one} vs {loss_two}");
        let scale = one.gradient().iter().fold(0.0f32, |m, g| m.max(g.abs()));
        let gap = one.gradient().iter().zip(two.gradient()).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(scale > 0.0 && gap <= 1e-5 * scale, "gradients differ by {gap} (largest {scale})");
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
