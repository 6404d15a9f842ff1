//! The Python actor package (`python/`, `proxima_actor`) against the Rust side: the same numbers for the same
//! weights (fixtures written here, checked by pytest), and real `proxima-actor` processes training with a
//! `learner serve` on loopback, for a Discrete and a Box env, with eval of the saved policy and a SIGTERM flush.
//!
//! Needs the package installed in the test Python (`scripts/test.sh` does `pip install ./python[dev]`).

use common::distributions::ActionDist;
use common::env::{Dtype, Space};
use common::model::{Activation, ConvLayer, CoreKind, ModelConfig};
use common::net::{ActorCriticNet, NetTrace, Sequences};
use common::normalize::ObsNormalizer;
use common::policy::{ActOutput, Policy, PolicySnapshot, encode_weights};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tests::procs::{Learner, Proc, free_port, samples, scrape, total};

/// The process tests of this file run one after another.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    let guard = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    tests::bin_path("learner");
    guard
}

/// One fixture: weights with random (non-zero) biases and log-std, raw observations, actions, and what the Rust
/// policy computes for them.
fn write_case(dir: &Path, name: &str, obs_space: &Space, space: &Space, cfg: &ModelConfig, normalize: bool, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let net = ActorCriticNet::for_env(cfg, obs_space, space).unwrap();
    let mut params = net.init(seed);
    // Non-zero biases and log-std; weights moved on the scale of their fan-in, so that deep conv stacks keep
    // activations of order one (and the 1e-5 tolerance is a relative one in effect).
    for e in net.entries() {
        let fan_in: usize = if e.name.ends_with(".weight") { e.shape[1..].iter().product() } else { 1 };
        let scale = 0.3 / (fan_in as f32).sqrt();
        params[e.range()].iter_mut().for_each(|p| *p += rng.random_range(-scale..scale));
    }
    let (rows, obs_dim) = (16, obs_space.flat_dim());
    let obs: Vec<f32> = (0..rows * obs_dim)
        .map(|_| match obs_space.dtype() {
            Dtype::Float32 => rng.random_range(-3.0f32..3.0),
            Dtype::Uint8 => rng.random_range(0..=(1.0 / obs_space.input_scale()) as u8) as f32,
        })
        .collect();
    let norm = normalize.then(|| {
        let mut n = ObsNormalizer::new(obs_dim, 5.0);
        let history: Vec<f32> = (0..64 * obs_dim).map(|_| rng.random_range(-2.0f32..4.0)).collect();
        n.rms.update(&history);
        n
    });
    let bytes = encode_weights(&net, &params, norm.as_ref()).expect("encode");
    std::fs::write(dir.join(format!("{name}.safetensors")), &bytes).expect("write weights");

    let mut input = obs.clone();
    common::obs::prepare_input(obs_space.dtype(), obs_space.input_scale(), norm.as_ref(), &mut input);
    let mut trace = NetTrace::default();
    // A recurrent model runs the rows as 4 envs' sequences of 4 steps (time-major), from random states, with
    // episodes starting inside them (and one at the first step, where the given state is ignored).
    let (envs, width, layout) = (4, net.state_dim(), net.spec().state_layout());
    let steps = rows / envs;
    let starts: Vec<bool> = (0..rows).map(|i| width > 0 && matches!(i, 2 | 9 | 15)).collect();
    let initial_state: Vec<f32> = (0..envs * width)
        .map(
            |i| if layout.is_cell(i % width) { rng.random_range(-2.0f32..2.0) } else { rng.random_range(-0.9f32..0.9) },
        )
        .collect();
    net.forward_seq(&params, &input, Sequences { steps, state0: &initial_state, starts: &starts }, &mut trace);
    let mut final_state = Vec::new();
    if width > 0 {
        (rows - envs..rows).for_each(|row| trace.state_after(row, &mut final_state));
    }
    let (head, values) = (trace.head().to_vec(), trace.values().to_vec());
    let out_dim = net.head().logits_dim();
    let dist = ActionDist::new(net.head(), net.log_std().map_or(&[][..], |r| &params[r]));
    let (mut actions, mut log_probs, mut entropy) = (Vec::new(), Vec::new(), Vec::new());
    for row in head.chunks_exact(out_dim) {
        let a: Vec<f32> = match space {
            Space::Discrete { n } => vec![rng.random_range(0..*n) as f32],
            Space::MultiDiscrete { nvec } => nvec.iter().map(|&n| rng.random_range(0..n) as f32).collect(),
            Space::Box { .. } => row.iter().map(|m| m + rng.random_range(-2.0f32..2.0)).collect(),
        };
        log_probs.push(dist.log_prob(row, &a));
        entropy.push(dist.entropy(row));
        actions.push(a);
    }
    let snapshot = PolicySnapshot { version: 3, weights: bytes.into(), published_at: 0.0, incarnation: 0 };
    let mut policy = Policy::from_snapshot(net.spec(), &snapshot).expect("policy");
    // The actors' policy, step by step (one row per env, the state carried and zeroed at episode starts), gives
    // the same values as the replay of whole sequences.
    let (mut mode, mut step) = (ActOutput::default(), ActOutput::default());
    let mut state = initial_state.clone();
    for (t, rows_t) in obs.chunks_exact(envs * obs_dim).enumerate().take(if width > 0 { steps } else { 0 }) {
        for j in (0..envs).filter(|j| starts[t * envs + j]) {
            state[j * width..(j + 1) * width].fill(0.0);
        }
        policy.act(rows_t, &mut state, &mut rng, true, &mut step).expect("act");
        for (got, want) in step.values.iter().zip(&values[t * envs..(t + 1) * envs]) {
            assert!((got - want).abs() <= 1e-5, "{name}: step-by-step value {got}, replayed {want}");
        }
        mode.actions.extend_from_slice(&step.actions);
        mode.log_probs.extend_from_slice(&step.log_probs);
    }
    for (got, want) in state.iter().zip(&final_state) {
        assert!((got - want).abs() <= 1e-5, "{name}: step-by-step state {got}, replayed {want}");
    }
    if width == 0 {
        policy.act(&obs, &mut [], &mut rng, true, &mut mode).expect("act");
    }
    let recurrent = (width > 0).then(|| {
        json!({ "steps": steps, "envs": envs, "starts": starts, "initial_state": initial_state, "final_state": final_state })
    });
    let mut fixture = json!({
        "obs_dim": obs_dim,
        "discrete": matches!(space, Space::Discrete { .. }),
        "model": net.spec().to_json(),
        "hidden_sizes": cfg.hidden_sizes,
        "normalize": normalize,
        "obs": obs.chunks_exact(obs_dim).collect::<Vec<_>>(),
        "head": head.chunks_exact(out_dim).collect::<Vec<_>>(),
        "values": values,
        "actions": actions,
        "log_probs": log_probs,
        "entropy": entropy,
        "mode_actions": mode.actions.chunks_exact(mode.actions.len() / rows).collect::<Vec<_>>(),
        "mode_log_probs": mode.log_probs,
    });
    if let (Some(extra), Some(map)) = (recurrent, fixture.as_object_mut()) {
        map.extend(extra.as_object().cloned().unwrap_or_default());
    }
    std::fs::write(dir.join(format!("{name}.json")), fixture.to_string()).expect("write fixture");
}

/// Runs pytest on `python/tests/<target>` with `env`; panics with its output unless it passed (and ran tests).
fn pytest(target: &str, env: &[(&str, &Path)]) -> String {
    let mut cmd = Command::new(tests::python());
    cmd.args(["-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", &format!("python/tests/{target}")])
        .current_dir(tests::workspace_root());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run pytest");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains(" passed"), "pytest {target} failed:\n{text}");
    text
}

/// An MLP of `hidden` widths.
fn mlp(hidden: &[usize], activation: Activation) -> ModelConfig {
    ModelConfig { hidden_sizes: hidden.to_vec(), activation, ..ModelConfig::default() }
}

/// A ReLU conv stack of `(out_channels, kernel, stride)` layers, then `hidden`.
fn convs(layers: &[(usize, usize, usize)], hidden: &[usize], shared_trunk: bool) -> ModelConfig {
    let conv =
        layers.iter().map(|&(out_channels, kernel, stride)| ConvLayer { out_channels, kernel, stride }).collect();
    ModelConfig { conv, shared_trunk, ..mlp(hidden, Activation::Relu) }
}

/// For the same weights and observations, numpy and Rust agree on logits / Gaussian means, log-probs, entropy
/// and values within 1e-5: every head, with and without observation normalisation, tanh and ReLU, uint8 images
/// (scaled by 1/255 on both sides), conv encoders on channels-last and channels-first images, shared trunks, and
/// recurrent cores on shared and on separate trunks.
#[test]
fn python_and_rust_policies_agree() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pendulum = Space::vector(vec![-2.0], vec![2.0]);
    let mcc = Space::vector(vec![-1.0, -1.0, -1.0], vec![1.0, 1.0, 1.0]);
    let v = Space::unbounded;
    let image = |shape: &[usize]| Space::shaped(vec![0.0], vec![255.0], shape.to_vec(), Dtype::Uint8).unwrap();
    let (tanh, relu) = (Activation::Tanh, Activation::Relu);
    let multi = Space::MultiDiscrete { nvec: vec![3, 2, 4] };
    let d = |n| Space::Discrete { n };
    write_case(dir.path(), "discrete", &v(4), &d(2), &mlp(&[64, 64], tanh), false, 1);
    write_case(dir.path(), "discrete_norm", &v(6), &d(3), &mlp(&[64, 64], tanh), true, 2);
    write_case(dir.path(), "box", &v(3), &pendulum, &mlp(&[64, 64], tanh), false, 3);
    write_case(dir.path(), "box_norm", &v(17), &mcc, &mlp(&[256, 256], tanh), true, 4);
    write_case(dir.path(), "box_relu", &v(17), &mcc, &mlp(&[256, 256], relu), true, 5);
    write_case(dir.path(), "discrete_relu", &v(4), &d(2), &mlp(&[64, 64], relu), false, 6);
    write_case(dir.path(), "multi_discrete", &v(5), &multi, &mlp(&[32, 32], tanh), true, 7);
    write_case(dir.path(), "image", &image(&[3, 3, 2]), &d(4), &mlp(&[64, 64], tanh), false, 8);
    let two = [(4, 3, 2), (5, 2, 1)];
    write_case(dir.path(), "conv_hwc", &image(&[7, 7, 2]), &d(4), &convs(&two, &[16], false), false, 9);
    write_case(dir.path(), "conv_chw_box", &image(&[2, 9, 9]), &mcc, &convs(&two, &[16], false), false, 10);
    let nature = [(32, 8, 4), (64, 4, 2), (64, 3, 1)];
    write_case(dir.path(), "conv_shared", &image(&[4, 36, 36]), &d(6), &convs(&nature, &[512], true), false, 11);
    // 0/1 planes (MinAtar's frames): uint8 scaled by 1, not 1/255.
    let planes = Space::shaped(vec![0.0], vec![1.0], vec![10, 10, 4], Dtype::Uint8).unwrap();
    write_case(dir.path(), "conv_planes", &planes, &d(3), &convs(&[(16, 3, 1)], &[128], false), false, 13);
    let shared_mlp = ModelConfig { shared_trunk: true, ..mlp(&[32, 32], tanh) };
    write_case(dir.path(), "mlp_shared", &v(5), &multi, &shared_mlp, true, 12);
    // Recurrent cores over sequences with episode starts inside them.
    let lstm = ModelConfig { core: CoreKind::Lstm, core_size: 16, ..shared_mlp.clone() };
    write_case(dir.path(), "lstm_mlp", &v(5), &d(3), &lstm, true, 14);
    let gru = ModelConfig { core: CoreKind::Gru, core_size: 24, ..convs(&two, &[16], true) };
    write_case(dir.path(), "gru_conv", &image(&[7, 7, 2]), &pendulum, &gru, false, 15);
    // Separate trunks with a core each: the state is the actor's core's, then the critic's.
    let lstm_separate = ModelConfig { core: CoreKind::Lstm, core_size: 8, ..mlp(&[16], tanh) };
    write_case(dir.path(), "lstm_separate", &v(4), &pendulum, &lstm_separate, true, 16);
    let gru_separate = ModelConfig { core: CoreKind::Gru, core_size: 12, ..convs(&two, &[16], false) };
    write_case(dir.path(), "gru_conv_separate", &image(&[7, 7, 2]), &d(4), &gru_separate, false, 17);
    let text = pytest("crosslang", &[("PROXIMA_CROSSLANG_DIR", dir.path())]);
    text.lines().filter(|l| l.contains("[crosslang]")).for_each(|l| println!("{l}"));
    println!("{}", text.lines().last().unwrap_or_default());
}

/// A `proxima-actor` process for the learner on 127.0.0.1:`port`, metrics on `metrics` (or none), with `extra`
/// command-line arguments.
fn python_actor(dir: &Path, name: &str, port: u16, env: &str, metrics: Option<u16>, extra: &[&str]) -> Proc {
    let args: Vec<String> = [
        "-m",
        "proxima_actor",
        "--learner",
        &format!("http://127.0.0.1:{port}"),
        "--env",
        env,
        "--num-envs",
        "8",
        "--name",
        name,
        "--max-backoff-seconds",
        "1",
        "--metrics-addr",
        &metrics.map_or("none".into(), |p| format!("127.0.0.1:{p}")),
    ]
    .iter()
    .chain(extra)
    .map(|s| s.to_string())
    .collect();
    Proc::spawn(name, &tests::python(), &args, &[], dir)
}

/// Waits until the learner's `progress.csv` shows at least `steps` env steps.
fn wait_steps(learner: &mut Learner, steps: u64, timeout: Duration) -> u64 {
    let run_dir = learner.run_dir.clone();
    learner.proc.wait_for(&format!("{steps} env steps"), timeout, |_| {
        tests::read_progress(&run_dir).last().map(|r| r.env_steps).filter(|s| *s >= steps)
    })
}

/// Python actors (gymnasium's own CartPole-v1) train a Rust learner to the config's target (mean return 475 over 100
/// episodes) within 300k env steps, with nothing rejected. Along the way: the actors' metrics carry the Rust
/// actor's names and labels, a SIGTERM makes one Python actor send its last rollout and leave with status 0, and a
/// Rust actor takes its place (a mixed fleet). `proxima-actor eval` then plays the saved policy in gymnasium.
#[test]
fn python_actors_train_cartpole_to_475() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let overrides = ["total_steps=300000", "actors.count=2"];
    let mut learner = Learner::start(dir.path(), "learner", &dir.path().join("runs"), "py", port, &overrides, false);
    let actor_metrics = free_port();
    let mut py0 = python_actor(dir.path(), "py-0", port, "CartPole-v1", Some(actor_metrics), &[]);
    let mut py1 = python_actor(dir.path(), "py-1", port, "CartPole-v1", None, &[]);
    let started = Instant::now();
    wait_steps(&mut learner, 10_000, Duration::from_secs(120));

    // py-1 may still be starting (importing gymnasium) when py-0 alone has sent 10k steps: wait for both.
    let metrics_port = learner.metrics_port;
    learner.proc.wait_for("both Python actors connected", Duration::from_secs(60), |_| {
        scrape(metrics_port).filter(|m| total(m, "proxima_learner_connected_actors") >= 2.0)
    });
    let text = py0.wait_for("its /metrics to answer", Duration::from_secs(10), |_| scrape(actor_metrics));
    let accepted = samples(&text, "proxima_actor_rollouts_total")
        .into_iter()
        .find(|(labels, _)| labels.contains("outcome=\"accepted\""))
        .map(|(labels, v)| (labels.to_string(), v))
        .expect("rollouts counted by outcome");
    assert!(accepted.1 > 0.0 && accepted.0.contains("role=\"actor\"") && accepted.0.contains("env=\"CartPole-v1\""));
    for name in [
        "proxima_actor_env_steps_total",
        "proxima_actor_inference_latency_seconds_bucket",
        "proxima_actor_weight_update_latency_seconds_count",
        "proxima_actor_reconnects_total",
        "proxima_actor_connected",
        "proxima_actor_policy_version",
    ] {
        assert!(!samples(&text, name).is_empty(), "the Python actor's /metrics lacks {name}");
    }

    py1.signal("TERM");
    let status = py1.wait_exit(Duration::from_secs(20), || {});
    assert!(status.success(), "py-1 exited with {status}:\n{}", py1.tail(20));
    assert!(py1.log().contains("actor leaving flushed="), "py-1 did not flush:\n{}", py1.tail(20));
    let _rust = tests::procs::start_actor(dir.path(), "rust-1", port, &[]);

    let status = learner.proc.wait_exit(Duration::from_secs(240), || {});
    assert!(status.success(), "learner: {status}\n{}", learner.proc.tail(20));
    let elapsed = started.elapsed().as_secs_f64();
    let last = learner.progress().last().cloned().expect("progress rows");
    let mean = last.mean_return.expect("episodes finished");
    println!(
        "[python actors] mean return {mean:.1} at {} env steps in {elapsed:.1} s, policy v{}",
        last.env_steps, last.policy_version
    );
    assert!(mean >= 475.0 && last.env_steps <= 300_000, "CartPole not solved through Python actors: {last:?}");
    assert_eq!(total(&learner.final_metrics(), "proxima_learner_rejected_total"), 0.0, "rejections");
    assert!(learner.proc.log().contains("name=rust-1"), "the Rust actor did not join");

    let model = learner.run_dir.join("model.safetensors");
    let report = proxima_actor_eval(&model, &["--env", "CartPole-v1", "--episodes", "5", "--seed", "3"], &[]);
    assert_eq!(report["episodes"], 5);
    assert!(report["mean_return"].as_f64().expect("mean_return") >= 400.0, "plays badly in gymnasium: {report}");
}

/// A Python actor on a Box env (Pendulum-v1, truncated at 200 steps): Gaussian actions sent unclipped, final
/// observations of truncated steps, episode records that add up; the learner accepts every rollout and trains.
#[test]
fn python_actor_feeds_a_box_env() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let learner = train_with_a_python_actor(dir.path(), "pendulum.toml", "Pendulum-v1", 12_000);
    let rows = learner.progress();
    let last = rows.last().expect("progress rows");
    assert!(last.env_steps >= 12_000 && last.mean_return.is_some(), "{last:?}");
    println!(
        "[python box actor] {} env steps, policy v{}, mean return {:?}",
        last.env_steps, last.policy_version, last.mean_return
    );
}

/// A recurrent policy through the Python actor, on gymnasium's own CartPole-v1, unchanged: the learner serves
/// `configs/cartpole_lstm.toml`'s LSTM, the numpy actor carries each env's state and sends it with every rollout,
/// nothing is rejected (a state of the wrong size or range would be), and the policy learns.
#[test]
fn a_recurrent_policy_trains_through_a_python_actor() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let config = tests::workspace_root().join("configs/cartpole_lstm.toml");
    let runs = dir.path().join("runs");
    let args = ["--total-steps", "50000", "--env", "CartPole-v1"].map(str::to_string);
    let mut learner = Learner::with_config(dir.path(), "learner", &config, &runs, "lstm", port, &args);
    // The actor waits for each new policy, so it always acts with the newest one whatever the machine's load: an
    // LSTM update can outlast the default wait, and rollouts a version behind, or dropped as stale, would make how
    // much is learnt in 50k steps depend on timing (two runs here: 152.3 and 159.6).
    let _actor = python_actor(dir.path(), "py-lstm", port, "CartPole-v1", None, &["--policy-wait-ms", "60000"]);
    finish_without_rejections(&mut learner);
    assert_finite_diagnostics(&learner);
    let rows = learner.progress();
    let last = rows.last().cloned().expect("progress rows");
    println!(
        "[python lstm actor] {} env steps, policy v{}, mean return {:?}",
        last.env_steps, last.policy_version, last.mean_return
    );
    assert!(last.mean_return.is_some_and(|m| m >= 60.0), "the LSTM did not learn through the Python actor: {last:?}");
}

/// `learner serve` with `configs/<config>` for `steps` env steps, fed by one Python actor (8 envs) on gymnasium's
/// `env`; waits until the learner finishes and checks that it exited cleanly and rejected nothing.
fn train_with_a_python_actor(dir: &Path, config: &str, env: &str, steps: u64) -> Learner {
    let port = free_port();
    let config = tests::workspace_root().join("configs").join(config);
    let runs = dir.join("runs");
    let budget = ["--total-steps".to_string(), steps.to_string()];
    let mut learner = Learner::with_config(dir, "learner", &config, &runs, "python", port, &budget);
    let _actor = python_actor(dir, "py-actor", port, env, None, &[]);
    finish_without_rejections(&mut learner);
    learner
}

/// Waits until the learner ends its run, checks that it exited cleanly and rejected nothing; returns its final
/// metrics (`metrics.prom`).
fn finish_without_rejections(learner: &mut Learner) -> String {
    let status = learner.proc.wait_exit(Duration::from_secs(240), || {});
    assert!(status.success(), "learner: {status}\n{}", learner.proc.tail(30));
    let m = learner.final_metrics();
    assert_eq!(total(&m, "proxima_learner_rejected_total"), 0.0, "rejections:\n{m}");
    m
}

/// `python/tests/user_actor.py`: a Python actor for one of its test envs (`corridor`, `reach`, `mismatch`), started
/// through the library API (`proxima_actor.run`), with `ActorOptions` fields as `key=value` options.
fn user_actor(dir: &Path, which: &str, port: u16, name: &str, options: &[&str]) -> Proc {
    let tests_dir = tests::workspace_root().join("python/tests");
    let mut args = vec![tests_dir.join("user_actor.py").display().to_string(), which.to_string()];
    args.extend([format!("http://127.0.0.1:{port}"), name.to_string()]);
    args.extend(options.iter().map(|o| o.to_string()));
    Proc::spawn(name, &tests::python(), &args, &[("PYTHONPATH", tests_dir.display().to_string())], dir)
}

/// An env the learner does not build in (`python/tests/corridor.py`, run through `proxima_actor.run`): the learner
/// takes its spaces from `[env]` in the config, a Python actor trains it to near the optimal return (0.94; a random walk
/// averages 0.33), a Rust actor for it is refused, `learner eval` points to `proxima-actor eval`, which plays it.
/// The actor waits for every new policy (one rollout per update), so the run does not depend on timing.
#[test]
fn a_user_env_trains_through_a_python_actor() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let config = tests::spec_config(dir.path(), "corridor", "Corridor-v0", ("Box(0, 1, (2,))", "Discrete(2)"), 20_000);
    let runs = dir.path().join("runs");
    let mut learner = Learner::with_config(dir.path(), "learner", &config, &runs, "corridor", port, &[]);
    let pythonpath = tests::workspace_root().join("python/tests").display().to_string();
    let url = format!("http://127.0.0.1:{port}");

    // A Rust actor cannot build the env: it says so and exits instead of retrying. (Before the Python actor starts:
    // the learner trains the corridor in about a second and is gone.)
    let rust = Command::new(tests::bin_path("actor"))
        .args(["--learner", &url, "--env", "Corridor-v0", "--metrics-addr", "none"])
        .output()
        .expect("run the Rust actor");
    let rust_err = String::from_utf8_lossy(&rust.stderr);
    assert!(!rust.status.success() && rust_err.contains("Corridor-v0"), "Rust actor: {rust_err}");

    let _actor = user_actor(dir.path(), "corridor", port, "py-corridor", &["policy_wait_ms=60000"]);
    let status = learner.proc.wait_exit(Duration::from_secs(180), || {});
    assert!(status.success(), "learner: {status}\n{}", learner.proc.tail(30));
    let run_dir = learner.run_dir.clone();
    let last = tests::read_progress(&run_dir).last().cloned().expect("progress rows");
    println!(
        "[corridor] {} env steps, policy v{}, mean return {:?}",
        last.env_steps, last.policy_version, last.mean_return
    );
    assert!(last.mean_return.is_some_and(|m| m >= 0.85), "the corridor was not learned: {last:?}");
    let written = std::fs::read_to_string(run_dir.join("config.toml")).expect("run config");
    assert!(written.contains("observation_space = \"Box(0, 1, (2,))\""), "the spec is not in the run dir:\n{written}");

    let model = run_dir.join("model.safetensors").display().to_string();
    let out = Command::new(tests::bin_path("learner")).args(["eval", "--checkpoint", &model]).output().expect("eval");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("proxima-actor eval"), "learner eval: {err}");
    let args = ["--env", "Corridor-v0", "--make", "corridor:make", "--episodes", "5"];
    let report = proxima_actor_eval(Path::new(&model), &args, &[("PYTHONPATH", &pythonpath)]);
    assert!((report["mean_return"].as_f64().expect("mean") - 0.94).abs() < 1e-6, "not optimal: {report}");
}

/// MultiDiscrete actions end to end (`python/tests/dials.py`: set two dials, of 3 and 2 settings, to the targets the
/// observation shows; 10 steps an episode, +1 per dial on target): the learner trains a multi-Categorical head on
/// what a Python actor sends, and the return climbs from a random policy's 8.3 towards the optimum 20. The actor
/// waits for every new policy, so the run does not depend on timing.
#[test]
fn multi_discrete_actions_train_through_a_python_actor() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let spaces = ("Box(0, 1, (2,))", "MultiDiscrete([3, 2])");
    let config = tests::spec_config(dir.path(), "dials", "Dials-v0", spaces, 100_000);
    let runs = dir.path().join("runs");
    let mut learner = Learner::with_config(dir.path(), "learner", &config, &runs, "dials", port, &[]);
    let _actor = user_actor(dir.path(), "dials", port, "py-dials", &["policy_wait_ms=60000"]);
    let status = learner.proc.wait_exit(Duration::from_secs(240), || {});
    assert!(status.success(), "learner: {status}\n{}", learner.proc.tail(30));
    let rows = tests::read_progress(&learner.run_dir);
    let (first, last) = (rows.first().cloned().expect("progress rows"), rows.last().cloned().expect("progress rows"));
    println!(
        "[dials] {} env steps, policy v{}, mean return {:?} (first update {:?})",
        last.env_steps, last.policy_version, last.mean_return, first.mean_return
    );
    assert!(last.mean_return.is_some_and(|m| m >= 17.0), "the dials were not learned: {last:?}");
}

/// MinAtar runs in both languages: a learner of the built-in `MinAtar/Breakout-v1` (Rust) takes a Python actor of
/// the `minatar` package's game (registered by `proxima-actor` for `MinAtar/*` ids): the spaces agree (a bool Box
/// travels as uint8 10x10x4), its image rollouts are accepted and trained on, nothing is rejected.
#[test]
fn a_python_actor_runs_minatar_for_a_rust_learner() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let config = dir.path().join("breakout.toml");
    let text = "env = \"MinAtar/Breakout-v1\"\ntotal_steps = 8192\n[actors]\nnum_envs = 8\nrollout_steps = 128\n";
    std::fs::write(&config, text).expect("write the config");
    let runs = dir.path().join("runs");
    let mut learner = Learner::with_config(dir.path(), "learner", &config, &runs, "breakout", port, &[]);
    let _actor = python_actor(dir.path(), "py-breakout", port, "MinAtar/Breakout-v1", None, &[]);
    finish_without_rejections(&mut learner);
    let last = tests::read_progress(&learner.run_dir).last().cloned().expect("progress rows");
    println!("[minatar] Python Breakout actor: {} env steps trained, policy v{}", last.env_steps, last.policy_version);
    assert!(last.env_steps >= 8192, "{last:?}");
}

/// uint8 image observations end to end (`python/tests/quadrant.py`: a 6x6x1 image with one lit 3x3 quadrant in
/// noise; +1 for naming the lit quadrant, 16 steps an episode): the Python actor sends the images as bytes (a
/// rollout's observations are 1 byte per value: the learner's received bytes stay below what f32 images alone
/// would take), nothing is rejected, and an MLP on the flattened image (scaled by 1/255) learns from a random
/// policy's 4 towards the optimum 16. The actor waits for every new policy, so the run does not depend on timing.
#[test]
fn image_observations_train_through_a_python_actor() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let spaces = ("Box(0, 255, (6, 6, 1), uint8)", "Discrete(4)");
    let total_steps = 60_000;
    let config = tests::spec_config(dir.path(), "quadrant", "Quadrant-v0", spaces, total_steps);
    let runs = dir.path().join("runs");
    let mut learner = Learner::with_config(dir.path(), "learner", &config, &runs, "quadrant", port, &[]);
    let _actor = user_actor(dir.path(), "quadrant", port, "py-quadrant", &["policy_wait_ms=60000"]);
    let m = finish_without_rejections(&mut learner);
    let (received, steps) =
        (total(&m, "proxima_learner_received_bytes_total"), total(&m, "proxima_learner_env_steps_total"));
    assert!(steps > 0.0, "no steps counted:\n{m}");
    assert!(received < steps * 36.0 * 4.0, "{received} bytes for {steps} steps: the images did not travel as bytes");
    let rows = tests::read_progress(&learner.run_dir);
    let (first, last) = (rows.first().cloned().expect("progress rows"), rows.last().cloned().expect("progress rows"));
    println!(
        "[quadrant] {} env steps, {received} bytes received ({:.0} per step), mean return {:?} (first update {:?})",
        last.env_steps,
        received / steps,
        last.mean_return,
        first.mean_return
    );
    assert!(last.mean_return.is_some_and(|m| m >= 14.0), "the lit quadrant was not learned: {last:?}");
}

/// A continuous-control env the learner does not know (`python/tests/reach.py`), run through the library API
/// (`proxima_actor.run`, `python/tests/user_actor.py`) against a learner with `env.spaces_from_first_actor` and no
/// spaces in its config: the first actor's spaces become the run's (logged, written to `config.toml`); an actor of
/// another env under the same id is refused with the difference named; the learner is stopped (SIGTERM) and
/// resumed, takes the spaces from its run directory, and the actor reconnects by itself; the policy learns (a
/// still point returns about -10, heading for the target about -1.2).
#[test]
fn a_user_env_takes_its_spaces_from_the_first_actor_and_survives_a_learner_restart() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let config = dir.path().join("reach.toml");
    let text = "seed = 1\ntotal_steps = 60000\n[env]\nid = \"Reach-v0\"\nspaces_from_first_actor = true\n\
                [actors]\nnum_envs = 8\nrollout_steps = 64\n[ppo]\nlearning_rate = 1e-3\n[server]\ncheckpoint_every = 5\n";
    std::fs::write(&config, text).expect("write the config");
    let runs = dir.path().join("runs");
    let mut learner = Learner::with_config(dir.path(), "learner", &config, &runs, "reach", port, &[]);
    let mut actor = user_actor(dir.path(), "reach", port, "py-reach", &[]);
    wait_steps(&mut learner, 10_000, Duration::from_secs(120));
    assert!(
        learner.proc.log().contains("env spaces taken from the first actor"),
        "adoption not logged:\n{}",
        learner.proc.tail(20)
    );
    let written = std::fs::read_to_string(learner.run_dir.join("config.toml")).expect("run config");
    assert!(
        written.contains("observation_space = \"Box(-1.0, 1.0, (2,))\"")
            && written.contains("action_space = \"Box(-1.0, 1.0, (1,))\""),
        "the adopted spec is not in the run dir:\n{written}"
    );

    let mut mismatch = user_actor(dir.path(), "mismatch", port, "py-mismatch", &[]);
    let status = mismatch.wait_exit(Duration::from_secs(60), || {});
    let refusal = mismatch.log();
    assert!(!status.success(), "a mismatching actor was not refused:\n{refusal}");
    assert!(
        refusal.contains("FAILED_PRECONDITION")
            && refusal.contains("observation space: Box(2) low[0]: actor has 0, learner has -1"),
        "the refusal does not name the difference:\n{}",
        mismatch.tail(10)
    );

    learner.proc.signal("TERM");
    let status = learner.proc.wait_exit(Duration::from_secs(60), || {});
    assert!(status.success(), "learner: {status}\n{}", learner.proc.tail(20));
    let before = learner.progress().last().cloned().expect("progress rows");

    let resume = ["--resume".to_string()];
    let mut learner = Learner::with_config(dir.path(), "learner-2", &config, &runs, "reach", port, &resume);
    let status = learner.proc.wait_exit(Duration::from_secs(240), || {});
    assert!(status.success(), "resumed learner: {status}\n{}", learner.proc.tail(30));
    assert!(learner.proc.log().contains("env spaces taken from the run's saved config"), "{}", learner.proc.tail(20));
    let last = learner.progress().last().cloned().expect("progress rows");
    println!(
        "[reach] stopped at {} steps (v{}), resumed to {} steps (v{}), mean return {:?}",
        before.env_steps, before.policy_version, last.env_steps, last.policy_version, last.mean_return
    );
    assert!(last.policy_version > before.policy_version && last.env_steps >= 60_000, "{before:?} -> {last:?}");
    assert!(last.mean_return.is_some_and(|m| m > -3.0), "the reach task was not learned: {last:?}");
    actor.signal("TERM");
    let status = actor.wait_exit(Duration::from_secs(30), || {});
    assert!(status.success(), "the actor did not leave cleanly: {status}\n{}", actor.tail(20));
}

/// MuJoCo through a Python actor (gymnasium's HalfCheetah-v5, `configs/halfcheetah.toml`: 256-256 ReLU nets,
/// observation and reward normalisation, the Zoo's settings): a few thousand steps train with finite diagnostics and nothing
/// rejected, and `proxima-actor eval` plays the saved policy in gymnasium. Needs `gymnasium[mujoco]` in the test
/// Python (`scripts/test.sh` installs it).
#[test]
fn a_mujoco_env_trains_through_a_python_actor() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let learner = train_with_a_python_actor(dir.path(), "halfcheetah.toml", "HalfCheetah-v5", 8192);
    assert_finite_diagnostics(&learner);
    let last = learner.progress().last().cloned().expect("progress rows");
    println!(
        "[halfcheetah] {} env steps, policy v{}, mean return {:?}",
        last.env_steps, last.policy_version, last.mean_return
    );

    let model = learner.run_dir.join("model.safetensors");
    let report = proxima_actor_eval(&model, &["--env", "HalfCheetah-v5", "--episodes", "1"], &[]);
    let ret = report["mean_return"].as_f64().expect("mean_return");
    assert!(ret.is_finite() && report["mean_length"].as_f64() == Some(1000.0), "{report}");
}

/// Every update of the run logged finite diagnostics.
fn assert_finite_diagnostics(learner: &Learner) {
    let csv = std::fs::read_to_string(learner.run_dir.join("progress.csv")).expect("progress.csv");
    let header: Vec<&str> = csv.lines().next().expect("header").split(',').collect();
    let rows: Vec<Vec<&str>> = csv.lines().skip(1).map(|l| l.split(',').collect()).collect();
    assert!(!rows.is_empty(), "no update");
    for column in ["approx_kl", "entropy", "policy_loss", "value_loss", "grad_norm", "adv_std"] {
        let i = header.iter().position(|h| *h == column).expect("column");
        for row in &rows {
            let v: f64 = row[i].parse().unwrap_or(f64::NAN);
            assert!(v.is_finite(), "{column} = {} in {row:?}", row[i]);
        }
    }
}

/// Atari through a Python actor (`configs/atari.toml`: `proxima-actor --atari` on `ALE/Pong-v5`, 4 stacked 84x84
/// grayscale frames, the Nature CNN shared by actor and critic): two updates train with the frames arriving as
/// uint8 (a byte per value), nothing rejected, finite diagnostics, and `proxima-actor eval --atari` plays a whole
/// game with the saved policy and reports its score. Needs `ale-py` and `opencv-python-headless` in the test
/// Python (`scripts/test.sh` installs them).
#[test]
fn pong_trains_through_a_python_actor() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let config = tests::workspace_root().join("configs/atari.toml");
    let runs = dir.path().join("runs");
    let budget = ["--total-steps".to_string(), "2048".to_string()];
    let mut learner = Learner::with_config(dir.path(), "learner", &config, &runs, "pong", port, &budget);
    let url = format!("http://127.0.0.1:{port}");
    let args: Vec<String> = ["-m", "proxima_actor", "--learner", &url, "--env", "ALE/Pong-v5", "--atari"]
        .into_iter()
        .chain(["--name", "py-pong", "--max-backoff-seconds", "1", "--metrics-addr", "none"])
        .map(str::to_string)
        .collect();
    let _actor = Proc::spawn("py-pong", &tests::python(), &args, &[], dir.path());
    let m = finish_without_rejections(&mut learner);
    // The steps trained come from progress.csv; the bytes per rollout from the final metrics, exact for the run.
    let last = learner.progress().last().cloned().expect("progress rows");
    let (received, rollouts) =
        (total(&m, "proxima_learner_received_bytes_total"), total(&m, "proxima_learner_rollouts_total"));
    assert!(last.env_steps >= 2048 && rollouts >= 1.0, "{} steps trained, {rollouts} rollouts:\n{m}", last.env_steps);
    // A rollout is 8 envs x 64 steps of 4x84x84 frames: 14.5 MB as bytes (58 MB as f32).
    let frames = 8.0 * 64.0 * 4.0 * 84.0 * 84.0;
    let per_rollout = received / rollouts;
    assert!(per_rollout < frames * 1.1, "{per_rollout} bytes per rollout: the frames did not travel as bytes");
    assert_finite_diagnostics(&learner);
    println!(
        "[pong] {} env steps trained, {rollouts} rollouts received, {per_rollout:.0} bytes each, policy v{}",
        last.env_steps, last.policy_version
    );

    let model = learner.run_dir.join("model.safetensors");
    let report = proxima_actor_eval(&model, &["--env", "ALE/Pong-v5", "--atari", "--episodes", "1"], &[]);
    let score = report["mean_return"].as_f64().expect("mean_return");
    assert!((-21.0..=21.0).contains(&score) && report["mean_length"].as_f64() > Some(0.0), "{report}");
}

/// `proxima-actor eval --checkpoint <model> --deterministic <args>` in the test Python with `env` set; fails unless
/// it exits 0 and ends with its JSON report, which it returns (the human line is printed).
fn proxima_actor_eval(model: &Path, args: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
    let out = Command::new(tests::python())
        .args(["-m", "proxima_actor", "eval", "--checkpoint", &model.display().to_string(), "--deterministic"])
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run proxima-actor eval");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "eval failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    println!("[proxima-actor eval] {}", stdout.lines().next().unwrap_or_default());
    stdout.lines().last().and_then(|l| serde_json::from_str(l).ok()).expect("a JSON line")
}
