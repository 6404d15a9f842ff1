//! The `learner` command line: its flags and what each subcommand runs.

use crate::process;
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use learner::config::TrainConfig;
use std::path::PathBuf;

/// Proxima learner: PPO over rollouts from actors.
#[derive(Parser)]
#[command(name = "learner", version)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train in one process: the trainer plus local actors (connected by channels, or by loopback gRPC).
    Train {
        #[command(flatten)]
        args: TrainArgs,
        /// How the local actors reach the trainer: `local` (channels) or `grpc` (the network path, on loopback).
        #[arg(long, value_enum, default_value = "local")]
        transport: Transport,
    },
    /// Serve actors over gRPC and train on their rollouts.
    Serve {
        #[command(flatten)]
        args: TrainArgs,
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// Draw `progress.png` (mean return, approx KL, clip fraction, entropy against env steps) from a run
    /// directory's `progress.csv`.
    Plot {
        /// The run directory.
        run_dir: PathBuf,
    },
    /// Ask a learner's gRPC health service whether it is serving (exit 0) or not (exit 1); for container
    /// health checks.
    Health {
        /// Learner URL.
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        addr: String,
        /// Seconds to wait for an answer.
        #[arg(long, default_value_t = 3.0)]
        timeout: f64,
    },
    /// Read `{"state": [...], "action": A}` JSON lines on stdin, step the env's raw dynamics once per line and
    /// write `{"state", "obs", "reward", "terminated"}` JSON lines (for checking against gymnasium).
    EnvStep {
        /// Environment id, e.g. CartPole-v1.
        #[arg(long)]
        env: String,
    },
    /// Play full episodes with a saved policy (a run's model.safetensors or a checkpoint) and print the mean,
    /// std, min and max return and episode length (a human line, then a JSON line).
    Eval {
        /// `<run>/model.safetensors` (env and model from `config.toml` beside it) or `checkpoint-*.safetensors`.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Episodes to play.
        #[arg(long, default_value_t = 10)]
        episodes: usize,
        /// Act with the policy's mode (argmax or Gaussian mean) instead of sampling.
        #[arg(long)]
        deterministic: bool,
        /// Seed of the episodes' resets and of action sampling.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Expected environment id; an error if the policy was trained on another.
        #[arg(long)]
        env: Option<String>,
    },
    /// Draw one episode of a saved policy (deterministic actions) as an animated GIF.
    Render {
        /// `<run>/model.safetensors` or `checkpoint-*.safetensors`.
        #[arg(long)]
        checkpoint: PathBuf,
        /// The GIF to write.
        #[arg(long, default_value = "episode.gif")]
        out: PathBuf,
        /// Seed of the episode's reset.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Draw at most this many frames (the initial state plus one per step).
        #[arg(long, default_value_t = 1000)]
        max_frames: usize,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Transport {
    Local,
    Grpc,
}

/// Network options of `serve`.
#[derive(Args)]
struct ServeArgs {
    /// Address to listen on (config key `server.listen`).
    #[arg(long, env = "PROXIMA_LISTEN")]
    listen: Option<String>,
    /// Shared token actors must present.
    #[arg(long, env = "PROXIMA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM certificate chain for TLS (with --tls-key).
    #[arg(long, env = "PROXIMA_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for TLS (with --tls-cert).
    #[arg(long, env = "PROXIMA_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Continue from the newest checkpoint of the run directory (a fresh run if it has none).
    #[arg(long, env = "PROXIMA_RESUME")]
    resume: bool,
    /// Serve Prometheus metrics on this address (`/metrics`); `none` to disable.
    #[arg(long, env = "PROXIMA_METRICS_ADDR", default_value = "0.0.0.0:9000")]
    metrics_addr: String,
}

/// Config file plus overrides; flags win over the file.
#[derive(Args)]
struct TrainArgs {
    /// TOML config (see configs/); defaults apply to missing keys.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Environment id (config key `env`).
    #[arg(long)]
    env: Option<String>,
    /// Root seed (config key `seed`).
    #[arg(long)]
    seed: Option<u64>,
    /// Stop after this many env steps (config key `total_steps`).
    #[arg(long)]
    total_steps: Option<u64>,
    /// Stop once the mean return of the last `return_window` (100) episodes reaches this (config key `target_return`).
    #[arg(long)]
    target_return: Option<f64>,
    /// cpu, cuda or cuda:N (config key `device`).
    #[arg(long)]
    device: Option<String>,
    /// Number of local actors (config key `actors.count`).
    #[arg(long)]
    num_actors: Option<usize>,
    /// Parent directory for run directories (config key `runs_dir`).
    #[arg(long)]
    runs_dir: Option<PathBuf>,
    /// Run directory name (config key `run_name`).
    #[arg(long)]
    run_name: Option<String>,
    /// Any config key, e.g. `--set ppo.learning_rate=3e-4 --set actors.num_envs=16`.
    #[arg(long = "set", short = 's', value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

impl TrainArgs {
    fn overrides(&self) -> Vec<String> {
        let mut o = Vec::new();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                o.push(format!("{k}={v}"));
            }
        };
        put("env", self.env.as_ref().map(|e| format!("{e:?}")));
        put("seed", self.seed.map(|s| s.to_string()));
        put("total_steps", self.total_steps.map(|s| s.to_string()));
        put("target_return", self.target_return.map(|s| format!("{s:?}")));
        put("device", self.device.as_ref().map(|d| format!("{d:?}")));
        put("actors.count", self.num_actors.map(|s| s.to_string()));
        put("runs_dir", self.runs_dir.as_ref().map(|d| format!("{:?}", d.display().to_string())));
        put("run_name", self.run_name.as_ref().map(|d| format!("{d:?}")));
        o.extend(self.overrides.iter().cloned());
        o
    }
}

/// Runs the subcommand `cli` names.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Train { args, transport } => {
            let cfg = TrainConfig::load(args.config.as_deref(), &args.overrides())?;
            let stop = process::stop_on_signals().context("cannot install signal handlers")?;
            let s = match transport {
                Transport::Local => crate::local::train(&cfg, stop)?,
                Transport::Grpc => crate::local::train_over_grpc(&cfg, stop)?,
            };
            let ret = s.mean_return.map_or("-".into(), |m| format!("{m:.1}"));
            match (cfg.target_return, s.target_reached_at) {
                (Some(t), Some(at)) => println!(
                    "reached target {t} at {at} env steps in {:.2} s (mean return {ret}); run dir {}",
                    s.wall_seconds,
                    s.run_dir.display()
                ),
                _ => println!(
                    "finished: {} env steps in {:.2} s, mean return {ret}, policy v{}; run dir {}",
                    s.env_steps,
                    s.wall_seconds,
                    s.policy_version,
                    s.run_dir.display()
                ),
            }
            Ok(())
        }
        Command::Serve { args, serve } => {
            let mut overrides = args.overrides();
            if let Some(l) = &serve.listen {
                overrides.push(format!("server.listen={l:?}"));
            }
            let cfg = TrainConfig::load(args.config.as_deref(), &overrides)?;
            let opts = learner::server::ServeOptions {
                token: serve.token,
                tls: serve.tls_cert.zip(serve.tls_key),
                resume: serve.resume,
            };
            let runtime = process::runtime(1)?;
            process::serve_metrics(&runtime, &serve.metrics_addr, common::metrics::Role::Learner, &cfg.env)?;
            let outcome = runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind(&cfg.server.listen)
                    .await
                    .with_context(|| format!("cannot listen on {}", cfg.server.listen))?;
                let shutdown = process::cancel_on_signals();
                anyhow::Ok(learner::server::serve(cfg, opts, listener, shutdown).await?)
            })?;
            println!(
                "learner stopped: {} env steps, policy v{}, mean return {}",
                outcome.env_steps,
                outcome.policy_version,
                outcome.mean_return.map_or("-".into(), |m| format!("{m:.1}"))
            );
            Ok(())
        }
        Command::Plot { run_dir } => {
            println!("{}", learner::run::plot::plot_run(&run_dir)?.display());
            Ok(())
        }
        Command::Health { addr, timeout } => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let timeout = std::time::Duration::from_secs_f64(timeout);
            runtime.block_on(learner::server::check_health(&addr, timeout))?;
            println!("SERVING");
            Ok(())
        }
        Command::EnvStep { env } => {
            let stdin = std::io::stdin().lock();
            let stdout = std::io::BufWriter::new(std::io::stdout().lock());
            learner::env_step::run(&env, stdin, stdout)?;
            Ok(())
        }
        Command::Eval { checkpoint, episodes, deterministic, seed, env } => {
            let opts = learner::eval::EvalOptions { episodes, deterministic, seed };
            let report = learner::eval::run(&checkpoint, env.as_deref(), &opts)?;
            println!("{}", report.human());
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::Render { checkpoint, out, seed, max_frames } => {
            let opts = learner::render::RenderOptions { seed, max_frames, ..Default::default() };
            let r = learner::render::render(&checkpoint, &out, &opts)?;
            println!(
                "{}: {} frames, episode return {:.2} over {} steps; wrote {}",
                r.env,
                r.frames,
                r.episode_return,
                r.episode_length,
                out.display()
            );
            Ok(())
        }
    }
}
