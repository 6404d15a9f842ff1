//! Ingest capacity of the learner's gRPC path alone: the real service (decode, validate, convert, enqueue) behind a
//! tonic server on loopback, with a "trainer" thread that only drains the queue. Clients submit one pre-built valid
//! CartPole rollout (random actions) over and over, one request in flight each, like actors.

use common::env::VecEnv;
use common::policy_cell::PolicyCell;
use common::rollout::Rollout;
use common::wire::pb;
use learner::config::TrainConfig;
use learner::server::auth::TokenAuth;
use learner::server::handlers::{LearnerService, RunInfo, Spec};
use prost::Message;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Options of `proxima-bench ingest`.
#[derive(clap::Args)]
pub struct Args {
    /// Concurrent clients (one connection and one request in flight each).
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Seconds to measure.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Envs per rollout.
    #[arg(long, default_value_t = 8)]
    num_envs: usize,
    /// Steps per env per rollout.
    #[arg(long, default_value_t = 32)]
    rollout_steps: usize,
}

/// `steps × num_envs` CartPole steps with uniformly random actions, packed as an actor would, but with no episode
/// ending: every client sends this one rollout again and again, and the learner holds episode records to the
/// rewards and done flags of an actor's consecutive rollouts, which a repeated rollout with endings would break.
fn random_rollout(num_envs: usize, steps: usize) -> anyhow::Result<Rollout> {
    let mut envs = VecEnv::new("CartPole-v1", num_envs, 0)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut r = Rollout { num_steps: steps, num_envs, ..Rollout::default() };
    for _ in 0..steps {
        r.obs.extend_raw(envs.obs())?;
        let actions: Vec<f32> = (0..num_envs).map(|_| rng.random_range(0..2u32) as f32).collect();
        r.actions.extend_from_slice(&actions);
        r.log_probs.extend(std::iter::repeat_n(0.5f32.ln(), num_envs));
        r.values.extend(std::iter::repeat_n(0.0, num_envs));
        let step = envs.step(&actions);
        r.rewards.extend_from_slice(&step.rewards);
        r.terminated.extend(std::iter::repeat_n(false, num_envs));
        r.truncated.extend(std::iter::repeat_n(false, num_envs));
    }
    r.next_obs.extend_raw(envs.obs())?;
    Ok(r)
}

/// Serves, loads and reports.
pub fn run(args: &Args) -> anyhow::Result<serde_json::Value> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(measure(args))
}

async fn measure(args: &Args) -> anyhow::Result<serde_json::Value> {
    let cfg = TrainConfig::default();
    let trainer = learner::update::trainer::Trainer::new(&cfg)?;
    let spec = common::env::make(&cfg.env.id)?;
    let run = RunInfo {
        rollout_steps: args.rollout_steps,
        root_seed: 0,
        max_policy_lag: u64::MAX,
        ..RunInfo::of(&cfg, "ingest-bench".into())
    };
    let policies = Arc::new(PolicyCell::new(trainer.snapshot()?));
    let spec = Spec { observation_space: spec.observation_space(), action_space: spec.action_space(), policies };
    let (tx, rx) = learner::queue::rollout_queue(cfg.server.queue_capacity);
    let stop = CancellationToken::new();
    let service = LearnerService::new(run, spec, tx, stop.clone());

    // The trivial trainer: drain and count.
    let draining = Arc::new(AtomicBool::new(true));
    let drained_steps = Arc::new(AtomicU64::new(0));
    let drain = {
        let (draining, drained_steps) = (draining.clone(), drained_steps.clone());
        std::thread::spawn(move || {
            while draining.load(Ordering::Relaxed) {
                if let Ok(r) = rx.recv_timeout(Duration::from_millis(20)) {
                    drained_steps.fetch_add(r.len() as u64, Ordering::Relaxed);
                }
            }
            // The clients and the server are done: take what is still queued (a loaded machine leaves some).
            while let Ok(r) = rx.try_recv() {
                drained_steps.fetch_add(r.len() as u64, Ordering::Relaxed);
            }
        })
    };

    let max = cfg.server.max_message_bytes;
    let learner = tonic::service::interceptor::InterceptedService::new(
        pb::learner_server::LearnerServer::new(service).max_decoding_message_size(max).max_encoding_message_size(max),
        TokenAuth::new(None),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(tonic::transport::Server::builder().add_service(learner).serve_with_incoming_shutdown(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        stop.clone().cancelled_owned(),
    ));

    let template = random_rollout(args.num_envs, args.rollout_steps)?;
    let request_bytes = pb::Rollout::from(&template).encoded_len();
    // The clock starts once every client has registered (connecting is not ingest), and each client sends at least
    // one rollout however long that took.
    let ready = Arc::new(tokio::sync::Barrier::new(args.clients + 1));
    let duration = Duration::from_secs_f64(args.seconds);
    let mut clients = Vec::new();
    for i in 0..args.clients {
        let template = template.clone();
        let ready = ready.clone();
        let url = format!("http://{addr}");
        clients.push(tokio::spawn(async move {
            let connected = async {
                let mut client =
                    pb::learner_client::LearnerClient::connect(url).await?.max_encoding_message_size(usize::MAX);
                let reg = client
                    .register(pb::RegisterRequest {
                        actor_name: format!("bench-{i}"),
                        env_id: "CartPole-v1".into(),
                        observation_space: Some((&common::env::make("CartPole-v1")?.observation_space()).into()),
                        action_space: Some((&common::env::make("CartPole-v1")?.action_space()).into()),
                        num_envs: template.num_envs as u32,
                        protocol_version: common::wire::PROTOCOL_VERSION as i32,
                        learner_num_envs: false,
                    })
                    .await?
                    .into_inner();
                let request = pb::Rollout::from(&Rollout { actor_id: common::ids::ActorId(reg.actor_id), ..template });
                anyhow::Ok((client, request))
            }
            .await;
            // At the barrier even after a failure, so that the others and the clock are not kept waiting.
            ready.wait().await;
            let (mut client, request) = connected?;
            let deadline = Instant::now() + duration;
            let mut sent = 0u64;
            loop {
                client.submit_rollout(request.clone()).await?;
                sent += 1;
                if Instant::now() >= deadline {
                    break;
                }
            }
            anyhow::Ok(sent)
        }));
    }
    ready.wait().await;
    let started = Instant::now();
    let mut rollouts = 0u64;
    for c in clients {
        rollouts += c.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    stop.cancel();
    let _ = server.await;
    draining.store(false, Ordering::Relaxed);
    let _ = drain.join();
    let env_steps = rollouts * (args.num_envs * args.rollout_steps) as u64;
    let bytes = rollouts * request_bytes as u64;
    Ok(serde_json::json!({
        "workload": "ingest",
        "clients": args.clients,
        "num_envs": args.num_envs,
        "rollout_steps": args.rollout_steps,
        "request_bytes": request_bytes,
        "rollouts": rollouts,
        "env_steps": env_steps,
        "drained_env_steps": drained_steps.load(Ordering::Relaxed),
        "bytes": bytes,
        "seconds": seconds,
        "rollouts_per_s": rollouts as f64 / seconds,
        "env_steps_per_s": env_steps as f64 / seconds,
        "mb_per_s": bytes as f64 / seconds / 1e6,
    }))
}
