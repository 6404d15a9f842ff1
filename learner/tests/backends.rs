//! The two backends are one algorithm: from the same seed, on the same batch and shuffles, several epochs of
//! minibatch updates leave the same parameters and Adam moments (up to float rounding) and report the same
//! diagnostics, for a Categorical, a multi-Categorical and a Gaussian policy and for both objectives.
//!
//! The candle backend runs on `PROXIMA_TEST_DEVICE` (`cpu` when unset; `cuda` on a build with `--features cuda`,
//! as `scripts/gpu-check.sh` runs it); the fused one always on the CPU.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use common::model::{Activation, ModelConfig, ModelSpec};
use common::net::ActorCriticNet;
use learner::config::{BackendKind, EnvConfig, Objective, TrainConfig};
use learner::update::backend::{self, Backend};
use learner::update::optim::AdamState;
use learner::update::ppo::{EpochPlan, HostBatch, LossCoefs};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn batch(cfg: &TrainConfig, n: usize) -> HostBatch {
    let (obs, space) = cfg.env.spaces().unwrap();
    let d = obs.flat_dim();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut normal = |k: usize| (0..k).map(|_| rng.random_range(-2.0f32..2.0)).collect::<Vec<f32>>();
    let actions = match &space {
        common::env::Space::Discrete { n: k } => (0..n).map(|i| (i % k) as f32).collect(),
        common::env::Space::Box { low, .. } => normal(n * low.len()),
        common::env::Space::MultiDiscrete { nvec } => {
            (0..n).flat_map(|i| nvec.iter().map(move |&k| ((i * 7 + k) % k) as f32)).collect()
        }
    };
    HostBatch {
        obs: normal(n * d),
        actions,
        log_probs: normal(n).into_iter().map(|x| -1.0 + 0.1 * x).collect(),
        advantages: normal(n),
        returns: normal(n),
        values: normal(n),
        sources: Vec::new(),
        seq: None,
    }
}

/// The model spec of `cfg`'s env and model.
fn spec(cfg: &TrainConfig) -> ModelSpec {
    let (obs, action) = cfg.env.spaces().unwrap();
    ModelSpec::resolve(&cfg.model, &obs, &action).unwrap()
}

/// The network of `cfg`'s env and model.
fn net(cfg: &TrainConfig) -> ActorCriticNet {
    ActorCriticNet::new(&spec(cfg)).unwrap()
}

/// The backend `cfg` asks for, initialised from `seed`; a candle backend on `PROXIMA_TEST_DEVICE`.
fn create(cfg: &TrainConfig, seed: u64) -> Box<dyn Backend> {
    let mut cfg = cfg.clone();
    if cfg.backend == BackendKind::Candle {
        cfg.device = std::env::var("PROXIMA_TEST_DEVICE").unwrap_or_else(|_| "cpu".into());
    }
    backend::create(&cfg, &spec(&cfg), seed).unwrap().1
}

/// The parameters by name.
fn params(b: &dyn Backend, net: &ActorCriticNet) -> Vec<(String, Vec<f32>)> {
    net.named("", &b.params().unwrap()).map(|(n, _, v)| (n, v.to_vec())).collect()
}

fn compare(env: &str, objective: Objective) {
    compare_model(env.into(), objective, ModelConfig::default());
}

fn compare_model(env: EnvConfig, objective: Objective, model: ModelConfig) {
    let cfg = |backend| TrainConfig { env: env.clone(), backend, model: model.clone(), ..TrainConfig::default() };
    let make = |kind| create(&cfg(kind), 11);
    let net = net(&cfg(BackendKind::Auto));
    let (mut fused, mut candle) = (make(BackendKind::Fused), make(BackendKind::Candle));
    assert_eq!(params(fused.as_ref(), &net), params(candle.as_ref(), &net), "same initial weights");
    let data = batch(&cfg(BackendKind::Auto), 192);
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
    for ((name, x), (_, y)) in params(fused.as_ref(), &net).iter().zip(params(candle.as_ref(), &net)) {
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
    assert_same_moments(&sa, &sb, &net, 1e-4);
}

/// Adam's first and second moments agree element-wise, parameter by parameter, within `tol` of each tensor's
/// largest element.
fn assert_same_moments(a: &AdamState, b: &AdamState, net: &ActorCriticNet, tol: f32) {
    assert_eq!((a.m.len(), a.v.len()), (b.m.len(), b.v.len()));
    for e in net.entries() {
        let na = &e.name;
        let (ma, va, mb, vb) = (&a.m[e.range()], &a.v[e.range()], &b.m[e.range()], &b.v[e.range()]);
        for (which, x, y) in [("m", ma, mb), ("v", va, vb)] {
            assert_eq!(x.len(), y.len(), "{which}.{na}");
            // Relative to the tensor's largest element: tiny entries are sums that nearly cancel.
            let scale = y.iter().fold(0.0f32, |s, q| s.max(q.abs()));
            for (p, q) in x.iter().zip(y) {
                assert!((p - q).abs() <= tol * scale, "{which}.{na}: {p} vs {q} (largest {scale})");
            }
        }
    }
}

/// A multi-Categorical head (MultiDiscrete([3, 2, 4]) actions on a user env's 6-value observations): the blocks'
/// log-probabilities, entropies and gradients agree, for both objectives.
#[test]
fn multi_categorical_agrees() {
    let env = EnvConfig::from("Dials-v0").with_spaces(
        &"Box(-2.0, 2.0, (6,))".parse().unwrap(),
        &common::env::Space::MultiDiscrete { nvec: vec![3, 2, 4] },
    );
    compare_model(env.clone(), Objective::Clip, ModelConfig::default());
    compare_model(env, Objective::KlPenalty, ModelConfig::default());
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

/// ReLU hidden layers, 256-256, log-std from -2, no orthogonal init (the RL Zoo's MuJoCo model): the same numbers on both
/// backends.
#[test]
fn relu_models_agree() {
    let zoo = ModelConfig {
        hidden_sizes: vec![256, 256],
        init_log_std: -2.0,
        activation: Activation::Relu,
        ortho_init: false,
        ..ModelConfig::default()
    };
    compare_model("Pendulum-v1".into(), Objective::Clip, zoo.clone());
    compare_model("CartPole-v1".into(), Objective::KlPenalty, ModelConfig { init_log_std: 0.0, ..zoo });
}

#[test]
fn checkpointed_state_moves_between_backends() {
    let cfg = TrainConfig { env: "Pendulum-v1".into(), backend: BackendKind::Fused, ..TrainConfig::default() };
    let net = net(&cfg);
    let mut fused = create(&cfg, 2);
    let data = batch(&cfg, 64);
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
    let mut candle = create(&TrainConfig { backend: BackendKind::Candle, ..cfg }, 9);
    let flat = fused.params().unwrap();
    candle.load_params(&flat).unwrap();
    candle.load_optimizer_state(fused.optimizer_state().unwrap()).unwrap();
    assert_eq!(params(candle.as_ref(), &net), params(fused.as_ref(), &net));
    assert_eq!(candle.optimizer_state().unwrap().step, 2);
    assert_same_moments(&candle.optimizer_state().unwrap(), &fused.optimizer_state().unwrap(), &net, 0.0);
    // A parameter of the wrong shape is refused with its name (by the layout, before any backend sees it), and a
    // flat vector of the wrong length by both backends.
    let mut named: common::codec::Tensors =
        net.named("", &flat).map(|(n, s, v)| (n, common::codec::HostTensor::new(s.to_vec(), v.to_vec()))).collect();
    named.insert("critic.0.weight".into(), common::codec::HostTensor::new(vec![2, 2], vec![0.0; 4]));
    let err = net.flatten(&named, "").unwrap_err().to_string();
    assert!(err.contains("critic.0.weight"), "{err}");
    for b in [&mut fused, &mut candle] {
        let err = b.load_params(&flat[1..]).unwrap_err().to_string();
        assert!(err.contains(&format!("{} parameter values", flat.len() - 1)), "{err}");
    }
}

fn all_finite(b: &dyn Backend) -> bool {
    let adam = b.optimizer_state().unwrap();
    [adam.m, adam.v, b.params().unwrap()].iter().all(|xs| xs.iter().all(|x| x.is_finite()))
}

fn clip_coefs(objective: Objective) -> LossCoefs {
    LossCoefs { objective, clip_coef: 0.2, clip_vloss: true, norm_adv: true, ent_coef: 0.01, vf_coef: 0.5, beta: 0.5 }
}

/// Behaviour log-probs far below anything the policy assigns (-100: the ratio would be e^99, infinite in f32) and
/// far above (+1e4): the clamped log-ratio keeps every step finite and applied, in both backends and both
/// objectives, for Categorical and Gaussian policies. Without the clamp these steps were NaN.
#[test]
fn extreme_behaviour_log_probs_train_finitely() {
    for (env, objective) in
        [("CartPole-v1", Objective::Clip), ("CartPole-v1", Objective::KlPenalty), ("Pendulum-v1", Objective::Clip)]
    {
        for kind in [BackendKind::Fused, BackendKind::Candle] {
            let cfg = TrainConfig { env: env.into(), backend: kind, ..TrainConfig::default() };
            let mut b = create(&cfg, 4);
            let mut data = batch(&cfg, 128);
            for (i, lp) in data.log_probs.iter_mut().enumerate() {
                *lp = if i % 2 == 0 { -100.0 } else { 1e4 };
            }
            let plan = EpochPlan { num_epochs: 2, minibatch_size: 64, max_grad_norm: 0.5, target_kl: None };
            let stats =
                b.run_epochs(&data, &clip_coefs(objective), &plan, 3e-4, &mut ChaCha8Rng::seed_from_u64(2)).unwrap();
            let what = format!("{env} {objective:?} {kind:?}");
            assert_eq!((stats.steps, stats.skipped_steps), (4, 0), "{what}: {stats:?}");
            assert!(stats.mean.loss.is_finite() && stats.mean.approx_kl.is_finite(), "{what}: {stats:?}");
            assert!(b.batch_kl(&data).unwrap().is_finite(), "{what}");
            assert!(all_finite(b.as_ref()), "{what}: non-finite parameter");
        }
    }
}

/// A rollout whose rows make the loss non-finite (NaN advantages, which validation cannot see because they are
/// computed by the learner) is caught by the guard: the steps it touches are not applied, its actor is blamed
/// and its rows leave the update, the other actor's rows still train, and every parameter stays finite.
#[test]
fn guard_skips_non_finite_steps_and_blames_the_rollout() {
    for kind in [BackendKind::Fused, BackendKind::Candle] {
        let cfg = TrainConfig { env: "Pendulum-v1".into(), backend: kind, ..TrainConfig::default() };
        let (net, mut b) = (net(&cfg), create(&cfg, 4));
        let before = params(b.as_ref(), &net);
        let mut data = batch(&cfg, 192);
        data.sources = vec![
            learner::update::ppo::RowSource { actor_id: common::ids::ActorId(7), rows: 0..96 },
            learner::update::ppo::RowSource { actor_id: common::ids::ActorId(8), rows: 96..192 },
        ];
        data.advantages[100] = f32::NAN;
        data.returns[150] = f32::INFINITY;
        let plan = EpochPlan { num_epochs: 3, minibatch_size: 64, max_grad_norm: 0.5, target_kl: None };
        let stats =
            b.run_epochs(&data, &clip_coefs(Objective::Clip), &plan, 3e-4, &mut ChaCha8Rng::seed_from_u64(5)).unwrap();
        let what = format!("{kind:?}: {stats:?}");
        assert!(stats.skipped_steps >= 1, "{what}");
        assert_eq!(stats.faulty_actors, vec![common::ids::ActorId(8)], "{what}");
        // After the blame, actor 7's 96 rows train on: 2 minibatches per epoch at most.
        assert!(stats.steps >= 3, "{what}");
        assert!(stats.mean.loss.is_finite(), "{what}");
        assert!(all_finite(b.as_ref()), "{kind:?}: non-finite parameter");
        assert_ne!(params(b.as_ref(), &net), before, "{kind:?}: the good rows were trained on");
        assert_eq!(b.optimizer_state().unwrap().step, stats.steps as u64, "{kind:?}: skipped steps leave no trace");
    }
}
