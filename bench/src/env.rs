//! Raw environment throughput: one env with its time limit, reset on termination or truncation, as gymnasium's
//! `gym.make(id)` loop in `bench/gym_env_throughput.py` does. Any registered id: the classic-control envs, the
//! MinAtar games (`MinAtar/Breakout-v1`, ...; the Python side registers them from the `minatar` package) and
//! proxima's own memory tasks (`proxima/CartPoleNoVelocity-v1`, `proxima/Recall-v0`; no Python counterpart).

use common::env::Space;
use rand::{Rng, SeedableRng};
use std::time::Instant;

/// Options of `proxima-bench env`.
#[derive(clap::Args)]
pub struct Args {
    /// Environment id (any registered one, e.g. `CartPole-v1` or `MinAtar/Seaquest-v1`).
    #[arg(long, default_value = "CartPole-v1")]
    env: String,
    /// Steps to time.
    #[arg(long, default_value_t = 2_000_000)]
    steps: usize,
}

/// Steps `args.steps` times with actions drawn before the clock starts.
pub fn run(args: &Args) -> anyhow::Result<serde_json::Value> {
    let mut env = common::env::make(&args.env)?;
    let (obs_dim, space) = (env.observation_space().flat_dim(), env.action_space());
    let width = space.flat_dim();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let actions: Vec<f32> = (0..args.steps)
        .flat_map(|_| match &space {
            Space::Discrete { n } => vec![rng.random_range(0..*n) as f32],
            Space::MultiDiscrete { nvec } => nvec.iter().map(|&n| rng.random_range(0..n) as f32).collect(),
            Space::Box { low, high, .. } => low.iter().zip(high).map(|(l, h)| rng.random_range(*l..=*h)).collect(),
        })
        .collect();
    let mut obs = vec![0.0f32; obs_dim];
    env.reset(Some(0), &mut obs);
    let (mut episodes, mut checksum) = (0u64, 0.0f64);
    let started = Instant::now();
    for action in actions.chunks_exact(width) {
        let t = env.step(action, &mut obs);
        checksum += t.reward;
        if t.terminated || t.truncated {
            env.reset(None, &mut obs);
            episodes += 1;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(serde_json::json!({
        "workload": "env",
        "system": "proxima",
        "env": args.env,
        "steps": args.steps,
        "episodes": episodes,
        "reward_sum": checksum,
        "seconds": seconds,
        "steps_per_s": args.steps as f64 / seconds,
    }))
}
