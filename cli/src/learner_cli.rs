//! The `learner` command line: its flags and what each subcommand runs.

use crate::process;
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use learner::config::TrainConfig;
use serde::Serialize;
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
        /// Continue the newest checkpoint of the run (`--run-name`, else the newest `<env>-seed<seed>-<time>` run
        /// in the runs directory); a fresh run if there is none.
        #[arg(long)]
        resume: bool,
        #[command(flatten)]
        dashboard: DashboardArgs,
    },
    /// Serve actors over gRPC and train on their rollouts.
    Serve {
        #[command(flatten)]
        args: TrainArgs,
        #[command(flatten)]
        serve: ServeArgs,
        #[command(flatten)]
        dashboard: DashboardArgs,
    },
    /// Print the resolved config as TOML (the file, the flags and `--set` overrides over the defaults): what a
    /// run with the same arguments writes to its `config.toml`.
    Config {
        #[command(flatten)]
        args: TrainArgs,
    },
    /// Draw `progress.png` (mean return with the spread of episode returns, the advantage distribution, entropy,
    /// approx KL, clip fraction, explained variance against env steps) from a run directory's `progress.csv`.
    Plot {
        /// The run directory.
        run_dir: PathBuf,
    },
    /// Ask a learner's gRPC health service whether it is serving (exit 0) or not (exit 1); for container
    /// health checks.
    Health {
        /// Learner URL (`https://` for a learner serving TLS, with `--tls-ca`).
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        addr: String,
        /// PEM file of the CA certificate that signed the learner's certificate (for an `https://` URL).
        #[arg(long)]
        tls_ca: Option<PathBuf>,
        /// Name to verify the learner's certificate for, when it is not the URL's host (`localhost` for
        /// `https://127.0.0.1:50051`, if the certificate names it).
        #[arg(long, requires = "tls_ca")]
        tls_domain: Option<String>,
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

/// Where the live dashboard is served.
#[derive(Args)]
struct DashboardArgs {
    /// Serve the live dashboard (a web page and its JSON at /api/state) on this address; `none` to disable.
    #[arg(long, env = "PROXIMA_DASHBOARD_ADDR", default_value = "127.0.0.1:8000", value_parser = parse_dashboard_addr)]
    dashboard_addr: String,
}

/// `none`, or an address to listen on (`HOST:PORT`). A malformed one is an error at once; a port that is taken
/// only costs the dashboard (logged when it is bound).
fn parse_dashboard_addr(addr: &str) -> Result<String, String> {
    use std::net::ToSocketAddrs;
    match addr {
        "none" => Ok(addr.to_string()),
        _ => addr.to_socket_addrs().map(|_| addr.to_string()).map_err(|e| format!("{e} (HOST:PORT, or none)")),
    }
}

impl DashboardArgs {
    /// The address, or `None` for `none`.
    fn addr(&self) -> Option<String> {
        (self.dashboard_addr != "none").then(|| self.dashboard_addr.clone())
    }
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
    #[arg(long, env = "PROXIMA_RESUME", value_parser = clap::builder::BoolishValueParser::new())]
    resume: bool,
    /// Serve Prometheus metrics on this address (`/metrics`); `none` not to serve them (the run directory's
    /// `metrics.prom` still gets their final values).
    #[arg(long, env = "PROXIMA_METRICS_ADDR", default_value = "0.0.0.0:9000")]
    metrics_addr: String,
}

/// Config file plus overrides: the file, then the flags, then `--set`, each winning over the one before.
#[derive(Args)]
struct TrainArgs {
    /// TOML config (see configs/); defaults apply to missing keys.
    #[arg(long, short)]
    config: Option<PathBuf>,
    #[command(flatten)]
    flags: ConfigFlags,
    /// Any config key, e.g. `--set ppo.learning_rate=3e-4 --set actors.num_envs=16`.
    #[arg(long = "set", short = 's', value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

/// The config keys with a flag of their own. Each field serialises under its config key, so the flags become a
/// typed layer over the file ([`TrainConfig::load_layers`]); unset flags are left out.
#[derive(Args, Serialize)]
struct ConfigFlags {
    /// Environment id (config key `env`).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    env: Option<String>,
    /// Root seed (config key `seed`).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
    /// Stop after this many env steps (config key `total_steps`).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    total_steps: Option<u64>,
    /// Stop once the mean return of the last `return_window` (100) episodes reaches this (config key `target_return`);
    /// negative targets (Acrobot's -100) work as `--target-return -100`.
    #[arg(long, allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    target_return: Option<f64>,
    /// cpu, cuda or cuda:N (config key `device`).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<String>,
    /// Parent directory for run directories (config key `runs_dir`).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    runs_dir: Option<PathBuf>,
    /// Run directory name (config key `run_name`).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    run_name: Option<String>,
    #[command(flatten)]
    actors: ActorsFlags,
    /// Set from `serve`'s own flags.
    #[arg(skip)]
    #[serde(skip_serializing_if = "ServerFlags::is_empty")]
    server: ServerFlags,
}

/// Flags of the `actors` section.
#[derive(Args, Serialize)]
struct ActorsFlags {
    /// Number of local actors (config key `actors.count`).
    #[arg(long = "num-actors")]
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<usize>,
}

/// Values of the `server` section that `serve` takes as flags ([`ServeArgs`]).
#[derive(Serialize, Default)]
struct ServerFlags {
    /// Config key `server.listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<String>,
}

impl ServerFlags {
    fn is_empty(&self) -> bool {
        self.listen.is_none()
    }
}

impl TrainArgs {
    /// The file, the flags and the `--set` overrides, validated.
    fn load(&self) -> anyhow::Result<TrainConfig> {
        let flags = toml::Table::try_from(&self.flags).context("cannot turn the flags into config values")?;
        Ok(TrainConfig::load_layers(self.config.as_deref(), flags, &self.overrides)?)
    }
}

/// Runs the subcommand `cli` names.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Train { args, transport, resume, dashboard } => {
            let cfg = args.load()?;
            let stop = process::stop_on_signals().context("cannot install signal handlers")?;
            // No /metrics in local training: the recorder only feeds the dashboard.
            let metrics = match dashboard.addr() {
                Some(_) => Some(common::metrics::serve(None, common::metrics::Role::Learner, &cfg.env.id)?),
                None => None,
            };
            let dashboard = crate::local::DashboardOptions { addr: dashboard.addr(), metrics };
            let s = match transport {
                Transport::Local => crate::local::train(&cfg, resume, stop, &dashboard)?,
                Transport::Grpc => crate::local::train_over_grpc(&cfg, resume, stop, &dashboard)?,
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
        Command::Serve { mut args, serve, dashboard } => {
            args.flags.server.listen = serve.listen;
            let cfg = args.load()?;
            let runtime = process::runtime(1)?;
            let role = common::metrics::Role::Learner;
            // Recorded even without /metrics: the run directory gets the final totals (`metrics.prom`).
            let metrics = process::serve_metrics(&runtime, &serve.metrics_addr, role, &cfg.env.id, true)?;
            let opts = learner::server::ServeOptions {
                token: serve.token,
                tls: serve.tls_cert.zip(serve.tls_key),
                resume: serve.resume,
                dashboard_addr: dashboard.addr(),
                metrics,
            };
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
        Command::Config { args } => {
            print!("{}", toml::to_string(&args.load()?).context("cannot serialise the config")?);
            Ok(())
        }
        Command::Plot { run_dir } => {
            println!("{}", learner::run::plot::plot_run(&run_dir)?.display());
            Ok(())
        }
        Command::Health { addr, tls_ca, tls_domain, timeout } => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let timeout = std::time::Duration::from_secs_f64(timeout);
            let tls = tls_ca
                .map(|ca| common::wire::client_tls(&ca, tls_domain.as_deref()))
                .transpose()
                .map_err(|e| anyhow::anyhow!(e))?;
            runtime.block_on(learner::server::check_health(&addr, tls, timeout))?;
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A malformed dashboard address is refused when the command line is read (it used to cost only the
    /// dashboard, with a warning); `none` and resolvable `HOST:PORT`s pass.
    #[test]
    fn dashboard_addresses_are_checked_up_front() {
        for good in ["none", "127.0.0.1:8000", "0.0.0.0:0", "localhost:8000"] {
            assert!(Cli::try_parse_from(["learner", "train", "--dashboard-addr", good]).is_ok(), "{good}");
        }
        for bad in ["8000", "127.0.0.1", "127.0.0.1:99999", ""] {
            assert!(Cli::try_parse_from(["learner", "train", "--dashboard-addr", bad]).is_err(), "{bad}");
        }
    }

    fn train_config(argv: &[&str]) -> TrainConfig {
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Train { args, .. } | Command::Config { args } => args.load().unwrap(),
            Command::Serve { mut args, serve, .. } => {
                args.flags.server.listen = serve.listen;
                args.load().unwrap()
            }
            _ => panic!("not a training command"),
        }
    }

    #[test]
    fn flags_land_on_their_config_keys_between_the_file_and_set() {
        let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/cartpole.toml");
        let file = TrainConfig::load(Some(std::path::Path::new(config)), &[]).unwrap();
        let cfg = train_config(&[
            "learner",
            "train",
            "-c",
            config,
            "--env",
            "Acrobot-v1",
            "--seed",
            "7",
            "--target-return",
            "-100",
            "--num-actors",
            "3",
            "--run-name",
            "quote\"d",
            "--set",
            "seed=9",
        ]);
        assert_eq!(cfg.env.id, "Acrobot-v1");
        assert_eq!(cfg.seed, 9, "--set wins over the flag");
        assert_eq!(cfg.target_return, Some(-100.0));
        assert_eq!(cfg.actors.count, 3);
        assert_eq!(cfg.run_name.as_deref(), Some("quote\"d"));
        assert_eq!(cfg.ppo, file.ppo, "keys without a flag keep the file's values");
        assert_eq!(cfg.actors.num_envs, file.actors.num_envs, "a section flag keeps the section's other keys");

        let cfg = train_config(&["learner", "serve", "--listen", "127.0.0.1:1234", "--total-steps", "5000"]);
        assert_eq!(cfg.server.listen, "127.0.0.1:1234");
        assert_eq!(cfg.total_steps, 5000);
    }

    #[test]
    fn printed_config_reads_back_as_the_resolved_config() {
        let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/hopper.toml");
        let cfg = train_config(&["learner", "config", "-c", config, "--seed", "3", "--set", "ppo.gamma=0.5"]);
        assert_eq!((cfg.seed, cfg.ppo.gamma, cfg.env.id.as_str()), (3, 0.5, "Hopper-v5"));
        let printed = toml::to_string(&cfg).unwrap();
        assert_eq!(toml::from_str::<TrainConfig>(&printed).unwrap(), cfg);
    }
}
