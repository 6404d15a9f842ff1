//! Learner update throughput: the PPO epochs (clipped objective; CartPole's shape and 64-64 by default, any width,
//! observation size or image shape, conv preset, shared trunk and action space by flag) over a synthetic batch, and
//! the floor under it: the model's own forward and backward passes over the same minibatches, nothing else
//! (separate trunks only). `bench/torch_update.py` runs the same update in PyTorch.
//!
//! Threads are measured, not assumed: the on-CPU time of every thread of this process during the timed part
//! (`/proc/self/task/*/schedstat`, nanoseconds) gives the CPU seconds, the cores kept busy (CPU ÷ wall) and the
//! number of threads that did a share of the work. The fused backend's threads come from `--threads`; candle's
//! CPU matmuls use rayon's global pool, sized by `RAYON_NUM_THREADS` (else, candle's default, the physical
//! cores), which is reported as found.

use crate::model_flags::{apply_preset, observation_space};
use common::env::Space;
use common::model::ModelSpec;
use common::net::Trace;
use learner::config::{BackendKind, Objective, TrainConfig};
use learner::update::ppo::{EpochPlan, HostBatch, LossCoefs};
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use std::collections::HashMap;
use std::time::Instant;

/// Options of `proxima-bench update`.
#[derive(clap::Args)]
pub struct Args {
    /// `fused` or `candle`.
    #[arg(long, default_value = "fused")]
    backend: String,
    /// Samples per gradient step.
    #[arg(long, default_value_t = 256)]
    minibatch: usize,
    /// Samples per update (raised to `minibatch` if smaller).
    #[arg(long, default_value_t = 8192)]
    batch: usize,
    /// Passes over the batch.
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// Threads of the fused backend (1 or 2).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// `cpu`, or `cuda`/`cuda:N` for the candle backend (needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Repeat the timed epochs (and the floor) until at least this many seconds have passed (0: once).
    #[arg(long, default_value_t = 0.0)]
    min_seconds: f64,
    /// Hidden layer widths of both nets (e.g. `256,256` for the RL Zoo's MuJoCo models).
    #[arg(long, value_delimiter = ',', default_value = "64,64")]
    hidden: Vec<usize>,
    /// Observation width (default: CartPole's 4; HalfCheetah-v5 has 17).
    #[arg(long, default_value_t = 4)]
    obs_dim: usize,
    /// Action space in gymnasium's notation (default CartPole's `Discrete(2)`; HalfCheetah-v5: `Box(-1, 1, (6,))`).
    #[arg(long, default_value = "Discrete(2)")]
    action_space: String,
    /// Image observations of this shape (e.g. `10,10,4` or `4,84,84`), uint8 0..=255, instead of `--obs-dim`.
    #[arg(long, value_delimiter = ',')]
    obs_shape: Vec<usize>,
    /// Conv preset (`nature_cnn` or `minatar_cnn`): its convolutions, hidden sizes and ReLU replace `--hidden`.
    #[arg(long)]
    preset: Option<String>,
    /// One trunk for actor and critic.
    #[arg(long)]
    shared_trunk: bool,
    /// Recurrent core (`lstm` or `gru`; one on a shared trunk with `--shared-trunk`, else one per trunk): the
    /// batch is `batch / seq_steps` env sequences of `--seq-steps` steps with random initial states and ~2% episode
    /// starts, a minibatch `minibatch / seq_steps` whole sequences.
    #[arg(long, default_value = "none")]
    core: String,
    /// Hidden units of the core.
    #[arg(long, default_value_t = 64)]
    core_size: usize,
    /// Steps per sequence with a core.
    #[arg(long, default_value_t = 32)]
    seq_steps: usize,
}

/// A thread counts as busy when it was on a CPU for at least this share of the timed wall time.
const BUSY_SHARE: f64 = 0.1;

/// On-CPU nanoseconds of every thread of this process, by thread id; empty where schedstat is unavailable.
fn thread_cpu_ns() -> HashMap<u64, u64> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return out };
    for entry in dir.flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse::<u64>().ok()) else { continue };
        let Ok(text) = std::fs::read_to_string(entry.path().join("schedstat")) else { continue };
        if let Some(ns) = text.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()) {
            out.insert(tid, ns);
        }
    }
    out
}

/// CPU use of this process's threads between two `thread_cpu_ns` snapshots over `wall` seconds.
fn thread_use(before: &HashMap<u64, u64>, after: &HashMap<u64, u64>, wall: f64) -> serde_json::Value {
    if after.is_empty() || wall <= 0.0 {
        return serde_json::json!({ "available": false });
    }
    let mut per_thread: Vec<f64> = after
        .iter()
        .map(|(tid, ns)| ns.saturating_sub(before.get(tid).copied().unwrap_or(0)) as f64 / 1e9)
        .filter(|s| *s > 0.0)
        .collect();
    per_thread.sort_by(|a, b| b.total_cmp(a));
    let cpu: f64 = per_thread.iter().sum();
    serde_json::json!({
        "available": true,
        "cpu_seconds": cpu,
        "cores": cpu / wall,
        "busy_threads": per_thread.iter().filter(|s| **s >= BUSY_SHARE * wall).count(),
        "threads_alive": after.len(),
        "busy_share_threshold": BUSY_SHARE,
        "top_thread_shares": per_thread.iter().take(4).map(|s| s / wall).collect::<Vec<f64>>(),
    })
}

/// A batch of `n` samples with standard-normal observations, advantages and returns, and actions of `space`
/// (cycling through a Discrete space's actions; standard normal for a Box).
fn synthetic_batch(n: usize, obs_dim: usize, space: &Space) -> HostBatch {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut normal = |k: usize| (0..k).map(|_| rng.sample::<f32, _>(StandardNormal)).collect::<Vec<f32>>();
    let (actions, log_prob) = match space {
        Space::Discrete { n: k } => ((0..n).map(|i| (i % k) as f32).collect(), -(*k as f32).ln()),
        Space::Box { low, .. } => (normal(n * low.len()), -1.4 * low.len() as f32),
        Space::MultiDiscrete { nvec } => (
            (0..n).flat_map(|i| nvec.iter().map(move |&k| (i % k) as f32)).collect(),
            -nvec.iter().map(|&k| (k as f32).ln()).sum::<f32>(),
        ),
    };
    HostBatch {
        obs: normal(n * obs_dim),
        actions,
        log_probs: vec![log_prob; n],
        advantages: normal(n),
        returns: normal(n),
        values: normal(n),
        sources: Vec::new(),
        seq: None,
    }
}

/// `n` rows as `n / steps` sequences of `steps` rows (time-major, as one rollout of `n / steps` envs lays them
/// out) with random initial states and episode starts at ~2% of the rows.
fn synthetic_sequences(n: usize, steps: usize, state_dim: usize) -> learner::update::ppo::SeqLayout {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8);
    let envs = n / steps.max(1);
    learner::update::ppo::SeqLayout {
        steps,
        state_dim,
        sequences: (0..envs).map(|j| (j, envs)).collect(),
        initial_states: (0..envs * state_dim).map(|_| rng.random_range(-0.5f32..0.5)).collect(),
        starts: (0..n).map(|i| i >= envs && rng.random_bool(0.02)).collect(),
    }
}

/// Runs the epochs once untimed (warm-up) and once timed.
pub fn run(args: &Args) -> anyhow::Result<serde_json::Value> {
    let backend = match args.backend.as_str() {
        "fused" => BackendKind::Fused,
        "candle" => BackendKind::Candle,
        other => anyhow::bail!("unknown backend {other:?} (fused or candle)"),
    };
    let mut cfg = TrainConfig { backend, threads: args.threads, device: args.device.clone(), ..TrainConfig::default() };
    cfg.model.hidden_sizes = args.hidden.clone();
    if let Some(name) = &args.preset {
        apply_preset(&mut cfg.model, name)?;
    }
    cfg.model.shared_trunk = args.shared_trunk;
    cfg.model.core = serde_json::from_value(serde_json::json!(args.core))
        .map_err(|_| anyhow::anyhow!("unknown core {:?} (none, lstm or gru)", args.core))?;
    cfg.model.core_size = args.core_size;
    cfg.validate()?;
    let obs_space = observation_space(&args.obs_shape, args.obs_dim)?;
    let (obs_dim, space) = (obs_space.flat_dim(), args.action_space.parse::<Space>()?);
    let n = args.batch.max(args.minibatch);
    let mut batch = synthetic_batch(n, obs_dim, &space);
    let core = common::model::Core::of(cfg.model.core, cfg.model.core_size);
    let state_dim = common::model::StateLayout::of(core, cfg.model.shared_trunk).dim();
    if state_dim > 0 {
        batch.seq = Some(synthetic_sequences(n, args.seq_steps, state_dim));
    }
    let coefs = LossCoefs {
        objective: Objective::Clip,
        clip_coef: 0.2,
        clip_vloss: false,
        norm_adv: true,
        ent_coef: 0.0,
        vf_coef: 0.5,
        beta: 0.0,
    };
    let plan =
        EpochPlan { num_epochs: args.epochs, minibatch_size: args.minibatch, max_grad_norm: 0.5, target_kl: None };
    let spec = ModelSpec::resolve(&cfg.model, &obs_space, &space)?;
    let (dense, mut model) = learner::update::backend::create(&cfg, &spec, 1)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    model.run_epochs(&batch, &coefs, &EpochPlan { num_epochs: 1, ..plan }, 1e-4, &mut rng)?;
    let before = thread_cpu_ns();
    let optimizer_steps_before = model.optimizer_steps();
    let started = Instant::now();
    let (mut epochs, mut steps, mut repeats) = (0, 0, 0usize);
    loop {
        let stats = model.run_epochs(&batch, &coefs, &plan, 1e-4, &mut rng)?;
        (epochs, steps, repeats) = (epochs + stats.epochs, steps + stats.steps, repeats + 1);
        if started.elapsed().as_secs_f64() >= args.min_seconds {
            break;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let threads_used = thread_use(&before, &thread_cpu_ns(), seconds);
    // Counted by the optimiser itself, apart from the epoch loop's own step count.
    let optimizer_steps = model.optimizer_steps() - optimizer_steps_before;
    let samples = epochs * n;

    // The floor: forward and backward of both nets over the same minibatches, on one thread.
    let params = model.params()?;
    let mut grads = vec![0.0f32; params.len()];
    let (mut trace, mut scratch, mut d_out) = (Trace::default(), Vec::new(), Vec::new());
    let towers = dense.separate();
    let started = Instant::now();
    let mut floor_samples = 0;
    while let Some((actor_tower, critic_tower)) = towers {
        for _ in 0..args.epochs {
            for rows in batch.obs.chunks(args.minibatch * obs_dim) {
                let (actor, critic) = dense.split(&params);
                let (actor_grads, critic_grads) = dense.split_mut(&mut grads);
                for (net, p, g) in [(actor_tower, actor, actor_grads), (critic_tower, critic, critic_grads)] {
                    net.forward(p, rows, rows.len() / obs_dim, &mut trace);
                    d_out.clear();
                    d_out.extend_from_slice(trace.output());
                    net.backward(p, rows, &mut trace, &mut d_out, g, &mut scratch, false);
                }
            }
            floor_samples += n;
        }
        if started.elapsed().as_secs_f64() >= args.min_seconds {
            break;
        }
    }
    let floor_seconds = started.elapsed().as_secs_f64();
    let rayon_env = std::env::var("RAYON_NUM_THREADS").ok();
    Ok(serde_json::json!({
        "workload": "update",
        "backend": args.backend,
        "device": args.device,
        // Fused: its own pool of `--threads` threads. Candle: rayon's global pool, RAYON_NUM_THREADS if set (null:
        // unset: candle's default, the physical cores). What actually ran is `threads_used`.
        "threads": if backend == BackendKind::Fused {
            Some(args.threads)
        } else {
            rayon_env.as_deref().and_then(|v| v.parse::<usize>().ok())
        },
        "rayon_num_threads_env": rayon_env,
        "threads_used": threads_used,
        "minibatch": args.minibatch,
        "batch": n,
        "epochs": epochs,
        "repeats": repeats,
        "gradient_steps": steps,
        "optimizer_steps": optimizer_steps,
        "samples": samples,
        "seconds": seconds,
        "samples_per_s": samples as f64 / seconds,
        "floor_samples_per_s": towers.map(|_| floor_samples as f64 / floor_seconds),
        "model": dense.spec().describe(),
        "parameters": dense.num_params(),
        "hidden": cfg.model.hidden_sizes,
        "obs_dim": obs_dim,
        "obs_shape": obs_space.shape(),
        "action_space": space.to_string(),
        "floor_note": "forward+backward of both nets over the same minibatches, one thread, no loss/optimiser",
    }))
}
