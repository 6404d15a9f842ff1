//! The PPO minibatch update against PyTorch (CleanRL's formulation): `tests/fixtures/golden/*.safetensors` hold
//! the model, a minibatch, the expected forward values, losses, gradients and the parameters after one clipped
//! Adam step. `tests/fixtures/golden/make_golden.py` produced them.
//!
//! The candle side runs on `PROXIMA_TEST_DEVICE` (`cpu` when unset; `cuda` on a build with `--features cuda`, as
//! `scripts/gpu-check.sh` runs it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use candle_core::{DType, Device, Tensor};
use common::env::{Dtype, Space};
use common::model::{Activation, ModelConfig};
use common::net::ActorCriticNet;
use learner::config::Objective;
use learner::update::backend::FusedBackend;
use learner::update::backend::candle::loss::{Batch, minibatch_loss, minibatch_step};
use learner::update::backend::candle::model::{ActorCritic, sorted_vars};
use learner::update::backend::candle::optim::Adam;
use learner::update::ppo::{HostBatch, LossCoefs, MinibatchStats, SeqLayout, StepOutcome};
use std::collections::HashMap;

/// The device of the candle side: `PROXIMA_TEST_DEVICE` (`cpu` or `cuda`), the CPU when unset. Opened once: each
/// `Device::new_cuda` is a device of its own, and candle refuses to combine tensors of two of them.
fn device() -> Device {
    static DEVICE: std::sync::OnceLock<Device> = std::sync::OnceLock::new();
    DEVICE
        .get_or_init(|| match std::env::var("PROXIMA_TEST_DEVICE").as_deref() {
            Ok("cuda") => Device::new_cuda(0).expect("PROXIMA_TEST_DEVICE=cuda needs a CUDA build and device"),
            _ => Device::Cpu,
        })
        .clone()
}

struct Golden {
    t: HashMap<String, Tensor>,
    scalars: serde_json::Value,
}

fn load(name: &str) -> Golden {
    // `PROXIMA_GOLDEN_DIR`: where the fixtures are when the binary runs away from its checkout (the GPU check).
    let dir = std::env::var("PROXIMA_GOLDEN_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/golden").into());
    let path = std::path::Path::new(&dir).join(name);
    let bytes = std::fs::read(&path).unwrap();
    let t = candle_core::safetensors::load_buffer(&bytes, &device()).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let scalars = serde_json::from_str(&meta.metadata().as_ref().unwrap()["scalars"]).unwrap();
    Golden { t, scalars }
}

fn assert_close(name: &str, got: &Tensor, want: &Tensor, rtol: f32, atol: f32) {
    let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let want = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(got.len(), want.len(), "{name}: length");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!((g - w).abs() <= atol + rtol * w.abs(), "{name}[{i}]: got {g}, want {w}");
    }
}

fn scalar_close(name: &str, got: f64, g: &Golden, rtol: f64) {
    let want = g.scalars[name].as_f64().unwrap();
    assert!((got - want).abs() <= 1e-7 + rtol * want.abs(), "{name}: got {got}, want {want}");
}

/// The minibatch diagnostics against the golden scalars.
fn check_loss_stats(stats: &MinibatchStats, g: &Golden) {
    scalar_close("pg_loss", stats.pg_loss, g, 1e-5);
    scalar_close("v_loss", stats.v_loss, g, 1e-5);
    scalar_close("entropy_loss", stats.entropy, g, 1e-5);
    scalar_close("loss", stats.loss, g, 1e-5);
    scalar_close("approx_kl", stats.approx_kl, g, 1e-4);
    scalar_close("old_approx_kl", stats.old_approx_kl, g, 1e-4);
    scalar_close("clipfrac", stats.clipfrac, g, 1e-9);
}

/// A trainable model holding the golden `param.*` values, and the golden minibatch.
fn setup(g: &Golden) -> (candle_nn::VarMap, ActorCritic, Batch, ActorCriticNet) {
    let obs = g.t["batch.obs"].clone();
    let continuous = g.t.contains_key("param.actor_logstd");
    // The policy layer: `actor.weight` after a shared trunk, else the actor trunk's last Linear.
    let policy_layer = g.t.keys().filter(|k| k.starts_with("param.actor") && k.ends_with(".weight")).max_by_key(|k| {
        k.trim_start_matches("param.actor.").trim_end_matches("weight").trim_end_matches('.').parse::<usize>().ok()
    });
    let act_dim = g.t[policy_layer.unwrap()].dim(0).unwrap();
    let space = if continuous {
        Space::vector(vec![-1.0; act_dim], vec![1.0; act_dim])
    } else {
        Space::Discrete { n: act_dim }
    };
    // tanh unless the golden says otherwise (files written before the activation was recorded).
    let activation = match g.scalars.get("activation").and_then(|a| a.as_str()) {
        Some("relu") => Activation::Relu,
        _ => Activation::Tanh,
    };
    let (model, obs_space) = match g.scalars.get("encoder").and_then(|e| e.as_str()) {
        Some("conv") => {
            let model = ModelConfig {
                conv: serde_json::from_value(g.scalars["conv"].clone()).unwrap(),
                image_layout: serde_json::from_value(g.scalars["layout"].clone()).unwrap(),
                hidden_sizes: serde_json::from_value(g.scalars["hidden_sizes"].clone()).unwrap(),
                shared_trunk: g.scalars["shared_trunk"].as_bool().unwrap(),
                activation,
                ..ModelConfig::default()
            };
            let shape: Vec<usize> = serde_json::from_value(g.scalars["obs_shape"].clone()).unwrap();
            (model, Space::shaped(vec![0.0], vec![255.0], shape, Dtype::Uint8).unwrap())
        }
        _ => (ModelConfig { activation, ..ModelConfig::default() }, Space::unbounded(obs.dim(1).unwrap())),
    };
    let net = ActorCriticNet::for_env(&model, &obs_space, &space).unwrap();
    let mut params = Vec::new();
    for e in net.entries() {
        let t = &g.t[&format!("param.{}", e.name)];
        assert_eq!(t.dims(), e.shape.as_slice(), "{}", e.name);
        params.extend(t.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    }
    let (varmap, model) = ActorCritic::with_params(&net, &params, &device()).unwrap();
    let actions =
        if continuous { g.t["batch.actions"].clone() } else { g.t["batch.actions"].to_dtype(DType::U32).unwrap() };
    let batch = Batch {
        obs,
        actions,
        log_probs: g.t["batch.old_logprobs"].clone(),
        advantages: g.t["batch.advantages"].clone(),
        returns: g.t["batch.returns"].clone(),
        values: g.t["batch.old_values"].clone(),
    };
    (varmap, model, batch, net)
}

fn coefs(g: &Golden) -> LossCoefs {
    let objective = match g.scalars["objective"].as_str().unwrap() {
        "clip" => Objective::Clip,
        _ => Objective::KlPenalty,
    };
    LossCoefs {
        objective,
        clip_coef: g.scalars["clip_coef"].as_f64().unwrap(),
        clip_vloss: true,
        norm_adv: true,
        ent_coef: g.scalars["ent_coef"].as_f64().unwrap(),
        vf_coef: g.scalars["vf_coef"].as_f64().unwrap(),
        beta: g.scalars["beta"].as_f64().unwrap(),
    }
}

fn check_case(name: &str) {
    let g = load(name);
    let (varmap, model, batch, _) = setup(&g);
    let c = coefs(&g);

    // Forward: log-probs, entropy, values, ratio.
    let eval = model.evaluate(&batch.obs, &batch.actions).unwrap();
    assert_close("newlogprob", &eval.log_prob, &g.t["expect.newlogprob"], 1e-5, 1e-6);
    assert_close("entropy", &eval.entropy, &g.t["expect.entropy"], 1e-5, 1e-6);
    assert_close("newvalue", &eval.value, &g.t["expect.newvalue"], 1e-5, 1e-6);
    let ratio = (&eval.log_prob - &batch.log_probs).unwrap().exp().unwrap();
    assert_close("ratio", &ratio, &g.t["expect.ratio"], 1e-5, 1e-6);

    // Losses and diagnostics.
    let (loss, stats) = minibatch_loss(&model, &batch, &c).unwrap();
    check_loss_stats(&stats, &g);

    // Gradients before clipping.
    let grads = loss.backward().unwrap();
    for (pname, var) in sorted_vars(&varmap).unwrap() {
        let grad = grads.get(&var).unwrap_or_else(|| panic!("no gradient for {pname}"));
        assert_close(&format!("grad.{pname}"), grad, &g.t[&format!("grad.{pname}")], 1e-4, 1e-6);
    }

    // One full step: loss, backward, clip to 0.5, Adam (lr 2.5e-4, eps 1e-5).
    let (varmap, model, batch, _) = setup(&g);
    let mut adam = Adam::new(sorted_vars(&varmap).unwrap(), g.scalars["lr"].as_f64().unwrap()).unwrap();
    let outcome = minibatch_step(&model, &mut adam, &batch, &c, g.scalars["max_grad_norm"].as_f64().unwrap()).unwrap();
    let StepOutcome::Applied(stats) = outcome else { panic!("the golden step was skipped: {outcome:?}") };
    scalar_close("grad_norm_before_clip", stats.grad_norm, &g, 1e-4);
    for (pname, var) in sorted_vars(&varmap).unwrap() {
        assert_close(&format!("next.{pname}"), var.as_tensor(), &g.t[&format!("next.{pname}")], 1e-5, 1e-6);
    }
}

/// The fused backend's hand-derived loss, gradient and Adam step on the same case.
fn check_fused_case(name: &str) {
    let g = load(name);
    let (varmap, _, batch, net) = setup(&g);
    let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let host = HostBatch {
        obs: flat(&batch.obs),
        actions: flat(&batch.actions.to_dtype(DType::F32).unwrap()),
        log_probs: flat(&batch.log_probs),
        advantages: flat(&batch.advantages),
        returns: flat(&batch.returns),
        values: flat(&batch.values),
        sources: Vec::new(),
        seq: None,
    };
    let tensors: Vec<Tensor> = sorted_vars(&varmap).unwrap().iter().map(|(_, v)| v.as_tensor().clone()).collect();
    let params = learner::update::backend::candle::model::flatten(&tensors).unwrap();
    let idx: Vec<u32> = (0..host.len() as u32).collect();
    check_fused_step(&g, &net, params, &host, &idx);
}

/// The fused backend on minibatch `idx` of `host` from the flat parameters `params`: losses and diagnostics,
/// gradients, and the parameters after one clipped Adam step, against the golden `g`.
fn check_fused_step(g: &Golden, net: &ActorCriticNet, params: Vec<f32>, host: &HostBatch, idx: &[u32]) {
    let c = coefs(g);
    // The golden tensor of each parameter, next to its span of a flat vector.
    let by_name = |flat: &[f32]| -> Vec<(String, Tensor)> {
        net.named("", flat).map(|(n, s, v)| (n, Tensor::from_slice(v, s, &device()).unwrap())).collect()
    };
    let mut fused = FusedBackend::new(net, params.clone(), 2).unwrap();
    check_loss_stats(&fused.loss_and_gradient(host, idx, &c), g);
    for (pname, grad) in by_name(fused.gradient()) {
        assert_close(&format!("fused grad.{pname}"), &grad, &g.t[&format!("grad.{pname}")], 1e-4, 1e-6);
    }

    let mut fused = FusedBackend::new(net, params, 2).unwrap();
    let max_grad_norm = g.scalars["max_grad_norm"].as_f64().unwrap();
    let outcome = fused.minibatch_step(host, idx, &c, max_grad_norm, g.scalars["lr"].as_f64().unwrap());
    let StepOutcome::Applied(stats) = outcome else { panic!("the golden step was skipped: {outcome:?}") };
    scalar_close("grad_norm_before_clip", stats.grad_norm, g, 1e-4);
    for (pname, t) in by_name(&learner::update::backend::Backend::params(&fused).unwrap()) {
        assert_close(&format!("fused next.{pname}"), &t, &g.t[&format!("next.{pname}")], 1e-5, 1e-6);
    }
}

#[test]
fn discrete_clip_matches_pytorch() {
    check_case("ppo_discrete_clip.safetensors");
    check_fused_case("ppo_discrete_clip.safetensors");
}

#[test]
fn continuous_clip_matches_pytorch() {
    check_case("ppo_continuous_clip.safetensors");
    check_fused_case("ppo_continuous_clip.safetensors");
}

/// ReLU hidden layers and a log-std starting at -2 (the RL Zoo's MuJoCo choices), HalfCheetah's shape.
#[test]
fn continuous_relu_clip_matches_pytorch() {
    check_case("ppo_continuous_relu_clip.safetensors");
    check_fused_case("ppo_continuous_relu_clip.safetensors");
}

/// The MinAtar network's shape on channels-last 6x6x3 images: separate trunks of a 16x3/1 convolution, a flatten
/// and 128 units, ReLU; both backends.
#[test]
fn conv_separate_clip_matches_pytorch() {
    check_case("ppo_conv_separate_clip.safetensors");
    check_fused_case("ppo_conv_separate_clip.safetensors");
}

/// The Nature CNN's convolutions (32x8/4, 64x4/2, 64x3/1, then 512) shared by actor and critic as in CleanRL's
/// `ppo_atari.py`, on channels-first 4x36x36 frames; both backends.
#[test]
fn conv_shared_clip_matches_pytorch() {
    check_case("ppo_conv_shared_clip.safetensors");
    check_fused_case("ppo_conv_shared_clip.safetensors");
}

#[test]
fn discrete_kl_penalty_matches_pytorch() {
    check_case("ppo_discrete_kl_penalty.safetensors");
    check_fused_case("ppo_discrete_kl_penalty.safetensors");
}

/// The clipped objective gives no policy gradient where the ratio has left the clip range in the direction the
/// advantage pushes (r > 1 + ε with A > 0, r < 1 − ε with A < 0), and does on the other side.
#[test]
fn clipped_objective_gradient_vanishes_outside_the_clip_range() {
    let g = load("ppo_discrete_clip.safetensors");
    let (varmap, model, batch, _) = setup(&g);
    let one = Tensor::new(&[0u32], &device()).unwrap();
    let mb = batch.select(&one).unwrap();
    let newlogprob = model.evaluate(&mb.obs, &mb.actions).unwrap().log_prob;
    let c = LossCoefs { norm_adv: false, ent_coef: 0.0, vf_coef: 0.0, ..coefs(&g) };
    let actor_grad_norm = |ratio: f32, adv: f32| {
        let mb = Batch {
            log_probs: (&newlogprob - (ratio as f64).ln()).unwrap().detach(),
            advantages: Tensor::new(&[adv], &device()).unwrap(),
            ..mb.clone()
        };
        let (loss, _) = minibatch_loss(&model, &mb, &c).unwrap();
        let grads = loss.backward().unwrap();
        sorted_vars(&varmap)
            .unwrap()
            .iter()
            .filter(|(n, _)| n.starts_with("actor."))
            .map(|(_, v)| grads.get(v).map_or(0.0, |t| t.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap()))
            .sum::<f32>()
    };
    assert_eq!(actor_grad_norm(1.5, 1.0), 0.0, "r > 1+eps, A > 0");
    assert_eq!(actor_grad_norm(0.5, -1.0), 0.0, "r < 1-eps, A < 0");
    assert!(actor_grad_norm(1.5, -1.0) > 0.0, "r > 1+eps, A < 0 still pushes down");
    assert!(actor_grad_norm(0.5, 1.0) > 0.0, "r < 1-eps, A > 0 still pushes up");
    assert!(actor_grad_norm(1.1, 1.0) > 0.0, "inside the range");
}

/// The fused backend's recurrent update against PyTorch: a shared MLP trunk and a one-layer LSTM or GRU with both
/// heads on its output, or separate trunks with a core each; `B` whole sequences of `T` steps (rows time-major) from stored initial states, with episode
/// starts inside them; losses, gradients through time and the parameters after one Adam step.
fn check_recurrent_case(name: &str) {
    let g = load(name);
    let flat = |t: &Tensor| t.flatten_all().unwrap().to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap();
    let s = &g.scalars;
    let (steps, size) = (s["steps"].as_u64().unwrap() as usize, s["core_size"].as_u64().unwrap() as usize);
    let core = match s["core"].as_str().unwrap() {
        "lstm" => common::model::CoreKind::Lstm,
        _ => common::model::CoreKind::Gru,
    };
    let cfg = ModelConfig {
        hidden_sizes: serde_json::from_value(s["hidden_sizes"].clone()).unwrap(),
        shared_trunk: s.get("shared_trunk").is_none_or(|v| v.as_bool().unwrap()),
        core,
        core_size: size,
        ..ModelConfig::default()
    };
    let head = ["param.actor.weight", "param.actor_head.weight"].into_iter().find(|k| g.t.contains_key(*k)).unwrap();
    let act_dim = g.t[head].dim(0).unwrap();
    let space = match g.t.contains_key("param.actor_logstd") {
        true => Space::vector(vec![-1.0; act_dim], vec![1.0; act_dim]),
        false => Space::Discrete { n: act_dim },
    };
    let obs_dim = s["obs_dim"].as_u64().unwrap() as usize;
    let net = ActorCriticNet::for_env(&cfg, &Space::unbounded(obs_dim), &space).unwrap();
    let params: Vec<f32> = net.entries().iter().flat_map(|e| flat(&g.t[&format!("param.{}", e.name)])).collect();
    let initial_states = flat(&g.t["batch.initial_state"]);
    let sequences = initial_states.len() / net.state_dim();
    let host = HostBatch {
        obs: flat(&g.t["batch.obs"]),
        actions: flat(&g.t["batch.actions"]),
        log_probs: flat(&g.t["batch.old_logprobs"]),
        advantages: flat(&g.t["batch.advantages"]),
        returns: flat(&g.t["batch.returns"]),
        values: flat(&g.t["batch.old_values"]),
        sources: Vec::new(),
        seq: Some(SeqLayout {
            steps,
            state_dim: net.state_dim(),
            sequences: (0..sequences).map(|b| (b, sequences)).collect(),
            initial_states,
            starts: flat(&g.t["batch.starts"]).iter().map(|&x| x != 0.0).collect(),
        }),
    };
    let mut idx = Vec::new();
    host.seq.as_ref().unwrap().rows_of(&(0..sequences as u32).collect::<Vec<_>>(), &mut idx);
    assert_eq!(idx, (0..host.len() as u32).collect::<Vec<_>>(), "the fixture's rows are time-major already");
    // The flat-buffer network (actor inference's) replays the sequences to PyTorch's values.
    let seq = host.seq.as_ref().unwrap();
    let mut trace = common::net::NetTrace::default();
    let replay = common::net::Sequences { steps, state0: &seq.initial_states, starts: &seq.starts };
    net.forward_seq(&params, &host.obs, replay, &mut trace);
    let values = Tensor::from_slice(trace.values(), host.len(), &device()).unwrap();
    assert_close("newvalue", &values, &g.t["expect.newvalue"], 1e-5, 1e-6);
    check_fused_step(&g, &net, params, &host, &idx);
}

/// A one-layer LSTM (16 units) on a shared 32-unit tanh trunk, 6 sequences of 8 steps, Categorical(3), clipped.
#[test]
fn lstm_clip_matches_pytorch() {
    check_recurrent_case("ppo_lstm_shared_clip.safetensors");
}

/// A one-layer GRU (12 units) on a shared 24-unit tanh trunk, 4 sequences of 10 steps, Gaussian(2), KL penalty.
#[test]
fn gru_kl_penalty_matches_pytorch() {
    check_recurrent_case("ppo_gru_shared_kl_penalty.safetensors");
}

/// Separate trunks (8 tanh units), an LSTM (12 units) each, 5 sequences of 6 steps, Gaussian(2), clipped: the
/// state is the actor's `[h, c]`, then the critic's.
#[test]
fn separate_lstm_clip_matches_pytorch() {
    check_recurrent_case("ppo_lstm_separate_clip.safetensors");
}
