//! `learner eval`: loads a saved policy (a run's `model.safetensors` or a `checkpoint-*.safetensors`) and plays
//! full episodes (time limits included) with it, using the saved observation statistics, reporting the returns.

use crate::config::TrainConfig;
use crate::error::{Error, Result};
use common::env::TimeLimit;
use common::model::{ModelConfig, ModelSpec};
use common::policy::{ActOutput, Policy, PolicySnapshot};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Metadata `format` of a checkpoint written by [`crate::run::checkpoint::Checkpointer`].
const CHECKPOINT_FORMAT: &str = "proxima-checkpoint-v1";

/// A policy read back from disk, with the env it was trained on.
pub struct SavedPolicy {
    /// The file it came from.
    pub path: PathBuf,
    /// Gymnasium id of the env it was trained on.
    pub env: String,
    /// The network shape.
    pub model: ModelConfig,
    /// The policy, ready to act on raw observations.
    pub policy: Policy,
}

impl SavedPolicy {
    /// Loads `path`: a checkpoint (env and config from its metadata) or a run's `model.safetensors` (env and
    /// config from `config.toml` in the same directory).
    pub fn load(path: &Path) -> Result<Self> {
        let fail = |reason: String| Error::Checkpoint { path: path.to_path_buf(), reason };
        let bytes = std::fs::read(path).map_err(Error::io(path))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| fail(format!("not a safetensors file: {e}")))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let (env, model) = if meta.get("format").map(String::as_str) == Some(CHECKPOINT_FORMAT) {
            let config = meta.get("config").ok_or_else(|| fail("checkpoint metadata has no config".into()))?;
            let cfg: TrainConfig =
                toml::from_str(config).map_err(|e| fail(format!("bad config in checkpoint metadata: {e}")))?;
            let state: serde_json::Value = meta
                .get("state")
                .ok_or_else(|| fail("checkpoint metadata has no state".into()))
                .and_then(|s| serde_json::from_str(s).map_err(|e| fail(format!("bad state in metadata: {e}"))))?;
            let env = state.get("env").and_then(|e| e.as_str()).map_or(cfg.env.id.clone(), str::to_string);
            (env, cfg.model)
        } else {
            let cfg_path = path.with_file_name("config.toml");
            let text = std::fs::read_to_string(&cfg_path).map_err(|e| {
                fail(format!("a policy file needs the run's config.toml beside it: {}: {e}", cfg_path.display()))
            })?;
            let cfg: TrainConfig =
                toml::from_str(&text).map_err(|e| fail(format!("bad run config {}: {e}", cfg_path.display())))?;
            (cfg.env.id, cfg.model)
        };
        let probe = common::env::make(&env).map_err(|_| Error::NotBuiltin { env: env.clone(), path: path.into() })?;
        let (obs_space, space) = (probe.observation_space(), probe.action_space());
        let snapshot = PolicySnapshot { version: 0, weights: bytes.into(), published_at: 0.0, incarnation: 0 };
        // The policy's own model spec decides the network; the config's [model] describes files from before it.
        let legacy = ModelSpec::legacy(&model.hidden_sizes, model.activation, &obs_space, &space);
        let policy = Policy::from_snapshot(&legacy, &snapshot).map_err(|e| fail(format!("does not fit {env}: {e}")))?;
        Ok(Self { path: path.to_path_buf(), env, model, policy })
    }

    /// Fails with a message naming both ids if `env` is given and differs from the policy's env.
    pub fn check_env(&self, env: Option<&str>) -> Result<()> {
        match env {
            Some(want) if want != self.env => Err(Error::Mismatch(format!(
                "{} was trained on {} but --env asks for {want}",
                self.path.display(),
                self.env
            ))),
            _ => Ok(()),
        }
    }
}

/// What to evaluate and how.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Episodes to play.
    pub episodes: usize,
    /// Take the mode of the policy instead of sampling.
    pub deterministic: bool,
    /// Seeds the env resets (episode `i` from `derive(seed, "eval", i)`) and the action sampling.
    pub seed: u64,
}

/// Returns and lengths of the evaluation episodes, with summary statistics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalReport {
    /// Env id.
    pub env: String,
    /// Episodes played.
    pub episodes: usize,
    /// Whether actions were the policy's mode.
    pub deterministic: bool,
    /// Mean episode return.
    pub mean_return: f64,
    /// Population standard deviation of the returns.
    pub std_return: f64,
    /// Smallest return.
    pub min_return: f64,
    /// Largest return.
    pub max_return: f64,
    /// Mean episode length.
    pub mean_length: f64,
    /// Shortest episode.
    pub min_length: u32,
    /// Longest episode.
    pub max_length: u32,
    /// Every episode's return, in order.
    pub returns: Vec<f64>,
    /// Every episode's length, in order.
    pub lengths: Vec<u32>,
}

impl EvalReport {
    fn new(env: &str, deterministic: bool, returns: Vec<f64>, lengths: Vec<u32>) -> Self {
        let n = returns.len().max(1) as f64;
        let mean_return = returns.iter().sum::<f64>() / n;
        let std_return = (returns.iter().map(|r| (r - mean_return).powi(2)).sum::<f64>() / n).sqrt();
        Self {
            env: env.to_string(),
            episodes: returns.len(),
            deterministic,
            mean_return,
            std_return,
            min_return: returns.iter().copied().fold(f64::INFINITY, f64::min),
            max_return: returns.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            mean_length: lengths.iter().map(|&l| f64::from(l)).sum::<f64>() / n,
            min_length: lengths.iter().copied().min().unwrap_or(0),
            max_length: lengths.iter().copied().max().unwrap_or(0),
            returns,
            lengths,
        }
    }

    /// One line for people.
    pub fn human(&self) -> String {
        format!(
            "{} over {} episodes ({}): return {:.2} ± {:.2} (min {:.2}, max {:.2}), length {:.1} (min {}, max {})",
            self.env,
            self.episodes,
            if self.deterministic { "deterministic" } else { "sampled" },
            self.mean_return,
            self.std_return,
            self.min_return,
            self.max_return,
            self.mean_length,
            self.min_length,
            self.max_length
        )
    }
}

/// The seed of evaluation episode `index`.
pub fn episode_seed(seed: u64, index: u64) -> u64 {
    common::seed::derive(seed, "eval", index)
}

/// Plays one episode of `env` from `reset(Some(reset_seed))` until it terminates or is truncated; Box actions
/// are clipped to the space's bounds before the env sees them (as the sampler does). `on_step` sees the env
/// after the reset and after every step. Returns the episode's return and length.
pub fn play_episode(
    policy: &mut Policy,
    env: &mut TimeLimit,
    reset_seed: u64,
    deterministic: bool,
    rng: &mut ChaCha8Rng,
    mut on_step: impl FnMut(&mut TimeLimit),
) -> Result<(f64, u32)> {
    let space = env.action_space();
    let mut obs = vec![0.0f32; env.observation_space().flat_dim()];
    let mut out = ActOutput::default();
    let mut action = Vec::with_capacity(space.flat_dim());
    // A recurrent policy's state, zero at the episode's start.
    let mut state = vec![0.0f32; policy.state_dim()];
    env.reset(Some(reset_seed), &mut obs);
    on_step(env);
    let (mut ret, mut len) = (0.0f64, 0u32);
    loop {
        policy.act(&obs, &mut state, rng, deterministic, &mut out)?;
        space.clip_into(&out.actions, &mut action);
        let t = env.step(&action, &mut obs);
        ret += t.reward;
        len += 1;
        on_step(env);
        if t.terminated || t.truncated {
            return Ok((ret, len));
        }
    }
}

/// Plays `opts.episodes` episodes of the policy's env.
pub fn evaluate(saved: &mut SavedPolicy, opts: &EvalOptions) -> Result<EvalReport> {
    if opts.episodes == 0 {
        return Err(Error::Internal("--episodes must be at least 1".into()));
    }
    let mut env = common::env::make(&saved.env)?;
    let mut rng = ChaCha8Rng::seed_from_u64(common::seed::derive(opts.seed, "eval-actions", 0));
    let (mut returns, mut lengths) = (Vec::with_capacity(opts.episodes), Vec::with_capacity(opts.episodes));
    for i in 0..opts.episodes {
        let (r, l) = play_episode(
            &mut saved.policy,
            &mut env,
            episode_seed(opts.seed, i as u64),
            opts.deterministic,
            &mut rng,
            |_| {},
        )?;
        returns.push(r);
        lengths.push(l);
    }
    Ok(EvalReport::new(&saved.env, opts.deterministic, returns, lengths))
}

/// `learner eval`: loads `checkpoint`, checks `env` against it and plays the episodes.
pub fn run(checkpoint: &Path, env: Option<&str>, opts: &EvalOptions) -> Result<EvalReport> {
    let mut saved = SavedPolicy::load(checkpoint)?;
    saved.check_env(env)?;
    evaluate(&mut saved, opts)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;

    /// A short real training run of `env` (a few updates) in `dir`; returns the run directory.
    pub(crate) fn short_run(dir: &Path, env: &str, extra: &[&str]) -> PathBuf {
        let mut overrides = vec![
            format!("env={env:?}"),
            "total_steps=512".to_string(),
            "actors.num_envs=2".into(),
            "actors.rollout_steps=128".into(),
            "ppo.minibatch_size=64".into(),
            "normalize.observations=true".into(),
            format!("runs_dir={:?}", dir.display().to_string()),
            "run_name=\"run\"".into(),
        ];
        overrides.extend(extra.iter().map(|s| s.to_string()));
        let cfg = TrainConfig::load(None, &overrides).unwrap();
        let mut trainer = crate::update::trainer::Trainer::new(&cfg).unwrap();
        let run = crate::run::dir::RunDir::create(&cfg).unwrap();
        let mut sampler = crate::test_support::sampler(&cfg, 1);
        while trainer.env_steps() < cfg.total_steps {
            let r = crate::test_support::collect(&trainer, &mut sampler);
            trainer.update(vec![r]).unwrap();
        }
        run.write_model(&trainer.weights().unwrap()).unwrap();
        run.path().to_path_buf()
    }

    #[test]
    fn report_statistics() {
        let r = EvalReport::new("X", true, vec![1.0, 3.0], vec![10, 20]);
        assert_eq!((r.mean_return, r.std_return, r.min_return, r.max_return), (2.0, 1.0, 1.0, 3.0));
        assert_eq!((r.mean_length, r.min_length, r.max_length), (15.0, 10, 20));
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"mean_return\":2.0"), "{json}");
    }

    #[test]
    fn evaluates_a_trained_model_and_rejects_another_env() {
        let dir = tempfile::tempdir().unwrap();
        let run_dir = short_run(dir.path(), "CartPole-v1", &[]);
        let model = run_dir.join("model.safetensors");
        let opts = EvalOptions { episodes: 3, deterministic: true, seed: 5 };
        let report = run(&model, Some("CartPole-v1"), &opts).unwrap();
        assert_eq!((report.episodes, report.returns.len(), report.lengths.len()), (3, 3, 3));
        // CartPole pays +1 per step, so each return equals its length.
        for (r, l) in report.returns.iter().zip(&report.lengths) {
            assert_eq!(*r, f64::from(*l));
            assert!((1..=500).contains(l));
        }
        assert_eq!(run(&model, None, &opts).unwrap(), report, "same seed, same episodes");

        let err = run(&model, Some("Pendulum-v1"), &opts).unwrap_err().to_string();
        assert!(err.contains("CartPole-v1") && err.contains("Pendulum-v1"), "{err}");

        std::fs::remove_file(run_dir.join("config.toml")).unwrap();
        let err = run(&model, None, &opts).unwrap_err().to_string();
        assert!(err.contains("config.toml"), "{err}");
    }

    #[test]
    fn evaluates_a_checkpoint_with_box_actions() {
        let dir = tempfile::tempdir().unwrap();
        let cfg =
            TrainConfig::load(None, &["env=\"Pendulum-v1\"".into(), "normalize.observations=true".into()]).unwrap();
        let trainer = crate::update::trainer::Trainer::new(&cfg).unwrap();
        let ck = crate::run::checkpoint::Checkpointer::new(dir.path(), 1).unwrap();
        let path = ck.save(&trainer).unwrap();
        let opts = EvalOptions { episodes: 2, deterministic: false, seed: 1 };
        let report = run(&path, Some("Pendulum-v1"), &opts).unwrap();
        assert_eq!(report.lengths, vec![200, 200], "Pendulum always runs to its time limit");
        assert!(report.returns.iter().all(|r| *r < 0.0 && *r >= -16.28 * 200.0));
        let err = run(&path, Some("MountainCar-v0"), &opts).unwrap_err().to_string();
        assert!(err.contains("Pendulum-v1") && err.contains("MountainCar-v0"), "{err}");
    }
}
