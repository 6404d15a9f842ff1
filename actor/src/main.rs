//! `actor`: steps environments with the learner's newest policy and streams rollouts to it.

use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Proxima actor: runs environments and streams rollouts to a learner; reconnects by itself.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Learner URL (https:// with --tls-ca).
    #[arg(long, env = "PROXIMA_LEARNER", default_value = "http://127.0.0.1:50051")]
    learner: String,
    /// Environment id; must be the one the learner trains.
    #[arg(long, env = "PROXIMA_ENV", default_value = "CartPole-v1")]
    env: String,
    /// Environments stepped together in one batched forward pass.
    #[arg(long, env = "PROXIMA_NUM_ENVS", default_value_t = 8)]
    num_envs: usize,
    /// Steps per env per rollout (default: the learner's setting).
    #[arg(long, env = "PROXIMA_ROLLOUT_STEPS")]
    rollout_steps: Option<usize>,
    /// Name in the learner's logs (default: the host name).
    #[arg(long, env = "PROXIMA_ACTOR_NAME")]
    name: Option<String>,
    /// Shared token the learner requires.
    #[arg(long, env = "PROXIMA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM CA certificate that signed the learner's TLS certificate (enables TLS).
    #[arg(long, env = "PROXIMA_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// Name to verify in the learner's certificate (default: the URL's host).
    #[arg(long, env = "PROXIMA_TLS_DOMAIN")]
    tls_domain: Option<String>,
    /// Serve Prometheus metrics on this address (`/metrics`); `none` to disable.
    #[arg(long, env = "PROXIMA_METRICS_ADDR", default_value = "0.0.0.0:9001")]
    metrics_addr: String,
    /// Longest wait for a newer policy after each rollout, in milliseconds (0: never wait; keeps data near
    /// on-policy without stalling when the learner needs more data per version).
    #[arg(long, env = "PROXIMA_POLICY_WAIT_MS", default_value_t = 250)]
    policy_wait_ms: u64,
    /// Longest wait between reconnect attempts, in seconds.
    #[arg(long, default_value_t = 10.0)]
    max_backoff_seconds: f64,
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("actor-{}", std::process::id()))
}

fn main() -> anyhow::Result<()> {
    common::shutdown::init_process();
    let args = Args::parse();
    if args.num_envs == 0 {
        anyhow::bail!("--num-envs must be at least 1");
    }
    let opts = actor::client::ActorOptions {
        num_envs: args.num_envs,
        rollout_steps: args.rollout_steps,
        name: args.name.unwrap_or_else(host_name),
        token: args.token,
        tls_ca: args.tls_ca,
        tls_domain: args.tls_domain,
        max_backoff: Duration::from_secs_f64(args.max_backoff_seconds.max(0.1)),
        policy_wait: match args.policy_wait_ms {
            0 => actor::PolicyWait::Never,
            ms => actor::PolicyWait::UpTo(Duration::from_millis(ms)),
        },
        ..actor::client::ActorOptions::new(args.learner, args.env)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    if args.metrics_addr != "none" {
        let addr =
            args.metrics_addr.parse().map_err(|e| anyhow::anyhow!("bad --metrics-addr {}: {e}", args.metrics_addr))?;
        let _guard = runtime.enter();
        common::metrics::serve(addr, common::metrics::Role::Actor, &opts.env).map_err(anyhow::Error::msg)?;
    }
    runtime.block_on(async move {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let s = shutdown.clone();
        tokio::spawn(common::shutdown::shut_down_on_signals(move || s.cancel()));
        actor::client::run(opts, shutdown).await
    })?;
    Ok(())
}
