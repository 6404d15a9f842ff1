//! The two backends are one algorithm: from the same seed, on the same batch and shuffles, several epochs of
//! minibatch updates leave the same parameters and Adam moments (up to float rounding) and report the same
//! diagnostics, for a Categorical and a Gaussian policy and for both objectives.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use learner::backend::{self, Backend};
use learner::config::{BackendKind, Objective, TrainConfig};
use learner::ppo::{EpochPlan, HostBatch, LossCoefs};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn batch(env: &str, n: usize) -> HostBatch {
    let spec = common::env::make(env).unwrap();
    let (d, space) = (spec.observation_space().flat_dim(), spec.action_space());
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut normal = |k: usize| (0..k).map(|_| rng.random_range(-2.0f32..2.0)).collect::<Vec<f32>>();
    let actions = match &space {
        common::env::Space::Discrete { n: k } => (0..n).map(|i| (i % k) as f32).collect(),
        common::env::Space::Box { low, .. } => normal(n * low.len()),
    };
    HostBatch {
        obs: normal(n * d),
        actions,
        log_probs: normal(n).into_iter().map(|x| -1.0 + 0.1 * x).collect(),
        advantages: normal(n),
        returns: normal(n),
        values: normal(n),
    }
}

fn params(b: &dyn Backend) -> Vec<(String, Vec<f32>)> {
    b.params().unwrap().into_iter().map(|(n, t)| (n, t.flatten_all().unwrap().to_vec1::<f32>().unwrap())).collect()
}

fn compare(env: &str, objective: Objective) {
    let make = |kind| {
        let cfg = TrainConfig { env: env.into(), backend: kind, ..TrainConfig::default() };
        backend::create(&cfg, 11).unwrap()
    };
    let (mut fused, mut candle) = (make(BackendKind::Fused), make(BackendKind::Candle));
    assert_eq!(params(fused.as_ref()), params(candle.as_ref()), "same initial weights");
    let data = batch(env, 192);
    let coefs = LossCoefs {
        objective,
        clip_coef: 0.2,
        clip_vloss: true,
        norm_adv: true,
        ent_coef: 0.01,
        vf_coef: 0.5,
        beta: 0.5,
    };
    let plan = EpochPlan { num_epochs: 3, minibatch_size: 64, max_grad_norm: 0.5, target_kl: None };
    let a = fused.run_epochs(&data, &coefs, &plan, 3e-4, &mut ChaCha8Rng::seed_from_u64(5)).unwrap();
    let b = candle.run_epochs(&data, &coefs, &plan, 3e-4, &mut ChaCha8Rng::seed_from_u64(5)).unwrap();
    assert_eq!((a.epochs, a.steps), (b.epochs, b.steps));
    let close = |x: f64, y: f64, what: &str| assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{what}: {x} vs {y}");
    close(a.mean.pg_loss, b.mean.pg_loss, "pg_loss");
    close(a.mean.v_loss, b.mean.v_loss, "v_loss");
    close(a.mean.entropy, b.mean.entropy, "entropy");
    close(a.mean.approx_kl, b.mean.approx_kl, "approx_kl");
    close(a.mean.clipfrac, b.mean.clipfrac, "clipfrac");
    close(a.mean.grad_norm, b.mean.grad_norm, "grad_norm");
    close(fused.batch_kl(&data).unwrap(), candle.batch_kl(&data).unwrap(), "batch_kl");
    for ((name, x), (_, y)) in params(fused.as_ref()).iter().zip(params(candle.as_ref())) {
        for (p, q) in x.iter().zip(&y) {
            assert!((p - q).abs() <= 2e-5 + 1e-4 * q.abs(), "{name}: {p} vs {q}");
        }
    }
    let obs = &data.obs[..data.obs.len() / 4];
    let n = obs.len() / (data.obs.len() / data.len());
    let (va, vb) = (fused.values(obs, n).unwrap(), candle.values(obs, n).unwrap());
    for (p, q) in va.iter().zip(&vb) {
        assert!((p - q).abs() <= 1e-4 * (1.0 + q.abs()), "value {p} vs {q}");
    }
    let (sa, sb) = (fused.optimizer_state().unwrap(), candle.optimizer_state().unwrap());
    assert_eq!(sa.step, sb.step);
}

#[test]
fn categorical_clip_agrees() {
    compare("CartPole-v1", Objective::Clip);
}

#[test]
fn categorical_kl_penalty_agrees() {
    compare("Acrobot-v1", Objective::KlPenalty);
}

#[test]
fn gaussian_clip_agrees() {
    compare("Pendulum-v1", Objective::Clip);
}

#[test]
fn checkpointed_state_moves_between_backends() {
    let cfg = TrainConfig { env: "Pendulum-v1".into(), backend: BackendKind::Fused, ..TrainConfig::default() };
    let mut fused = backend::create(&cfg, 2).unwrap();
    let data = batch("Pendulum-v1", 64);
    let coefs = LossCoefs {
        objective: Objective::Clip,
        clip_coef: 0.2,
        clip_vloss: false,
        norm_adv: true,
        ent_coef: 0.0,
        vf_coef: 0.5,
        beta: 0.0,
    };
    let plan = EpochPlan { num_epochs: 1, minibatch_size: 32, max_grad_norm: 0.5, target_kl: None };
    fused.run_epochs(&data, &coefs, &plan, 1e-3, &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
    let mut candle = backend::create(&TrainConfig { backend: BackendKind::Candle, ..cfg }, 9).unwrap();
    let named = fused.params().unwrap().into_iter().collect();
    candle.load_params(&named).unwrap();
    candle.load_optimizer_state(fused.optimizer_state().unwrap()).unwrap();
    assert_eq!(params(candle.as_ref()), params(fused.as_ref()));
    assert_eq!(candle.optimizer_state().unwrap().step, 2);
    // A parameter of the wrong shape is refused with its name.
    let mut bad = named.clone();
    bad.insert(
        "critic.0.weight".into(),
        candle_core::Tensor::zeros((2, 2), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap(),
    );
    let err = fused.load_params(&bad).unwrap_err();
    assert!(err.contains("critic.0.weight"), "{err}");
}
