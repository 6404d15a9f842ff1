//! Actor inference per step: the policy a Rust actor runs (`common::policy::Policy::act`) on one batch of
//! observations of `--num-envs` envs, for a model with or without a recurrent core, from a snapshot as actors
//! load it. With a core each call also reads and writes every env's state (as the sampler does between steps).

use crate::model_flags::{apply_preset, observation_space};
use common::env::Space;
use common::model::{CoreKind, ModelConfig, ModelSpec};
use common::net::ActorCriticNet;
use common::policy::{ActOutput, Policy, PolicySnapshot, encode_weights};
use rand::{Rng, SeedableRng};
use std::time::Instant;

/// Options of `proxima-bench act`.
#[derive(clap::Args)]
pub struct Args {
    /// Recurrent core: `none`, `lstm` or `gru`.
    #[arg(long, default_value = "none")]
    core: String,
    /// Separate actor and critic trunks (with a core: one core each) instead of one shared trunk.
    #[arg(long)]
    separate: bool,
    /// Hidden units of the core.
    #[arg(long, default_value_t = 64)]
    core_size: usize,
    /// Hidden layer widths of the trunk(s).
    #[arg(long, value_delimiter = ',', default_value = "64")]
    hidden: Vec<usize>,
    /// Observation width (default: CartPoleNoVelocity's 2).
    #[arg(long, default_value_t = 2)]
    obs_dim: usize,
    /// Image observations of this shape (e.g. `10,10,4` for MinAtar Breakout), uint8 0..=255, instead of
    /// `--obs-dim`.
    #[arg(long, value_delimiter = ',')]
    obs_shape: Vec<usize>,
    /// Conv preset (`nature_cnn` or `minatar_cnn`): its convolutions, hidden sizes and ReLU replace `--hidden`.
    #[arg(long)]
    preset: Option<String>,
    /// Actions of the discrete action space.
    #[arg(long, default_value_t = 2)]
    actions: usize,
    /// Envs per call.
    #[arg(long, default_value_t = 8)]
    num_envs: usize,
    /// Calls to time.
    #[arg(long, default_value_t = 200_000)]
    calls: usize,
}

/// Times `args.calls` calls of `Policy::act` on fixed random observations.
pub fn run(args: &Args) -> anyhow::Result<serde_json::Value> {
    let core: CoreKind = serde_json::from_value(serde_json::json!(args.core))
        .map_err(|_| anyhow::anyhow!("unknown core {:?} (none, lstm or gru)", args.core))?;
    let mut cfg = ModelConfig {
        hidden_sizes: args.hidden.clone(),
        shared_trunk: !args.separate,
        core,
        core_size: args.core_size,
        ..ModelConfig::default()
    };
    if let Some(name) = &args.preset {
        apply_preset(&mut cfg, name)?;
    }
    let obs_space = observation_space(&args.obs_shape, args.obs_dim)?;
    let obs_dim = obs_space.flat_dim();
    let spec = ModelSpec::resolve(&cfg, &obs_space, &Space::Discrete { n: args.actions })?;
    let net = ActorCriticNet::new(&spec)?;
    let weights = encode_weights(&net, &net.init(1), None)?;
    let snapshot = PolicySnapshot { version: 1, weights: weights.into(), published_at: 0.0, incarnation: 0 };
    let mut policy = Policy::from_snapshot(&spec, &snapshot)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let obs: Vec<f32> = match args.obs_shape.is_empty() {
        true => (0..args.num_envs * obs_dim).map(|_| rng.random_range(-1.0f32..1.0)).collect(),
        // MinAtar-like sparse 0/1 images.
        false => (0..args.num_envs * obs_dim).map(|_| f32::from(rng.random_bool(0.1))).collect(),
    };
    let mut state = vec![0.0f32; args.num_envs * policy.state_dim()];
    let mut out = ActOutput::default();
    let started = Instant::now();
    for _ in 0..args.calls {
        policy.act(&obs, &mut state, &mut rng, false, &mut out)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(serde_json::json!({
        "workload": "act",
        "model": spec.describe(),
        "num_envs": args.num_envs,
        "calls": args.calls,
        "seconds": seconds,
        "us_per_call": seconds * 1e6 / args.calls as f64,
        "env_steps_per_s": (args.calls * args.num_envs) as f64 / seconds,
    }))
}
