//! The networked actor: registers with the learner, follows its policy stream, runs the sampler thread and
//! uploads rollouts; reconnects with exponential backoff and jitter whenever the learner goes away.

use crate::Error;
use crate::sampler::{PolicyWait, Sampler, SamplerConfig, run_sampler};
use common::env::EnvFactory;
use common::ids::ActorId;
use common::metrics::{Outcome, reason};
use common::model::{Activation, ModelSpec};
use common::policy::PolicySnapshot;
use common::policy_cell::PolicyCell;
use common::rollout::DEFAULT_NUM_ENVS;
use common::rollout::Rollout;
use common::wire::{self, PROTOCOL_VERSION, pb};
use rand::Rng;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// The actor's settings: how to reach the learner and what to run. The one description of them: the `actor`
/// command line derives its flags and environment variables from it, local mode and tests fill it in code.
#[derive(Debug, Clone, clap::Args)]
pub struct ActorOptions {
    /// Learner URL: http://HOST:PORT, or https:// with --tls-ca (HOST:PORT alone means http://).
    #[arg(long, env = "PROXIMA_LEARNER", default_value = "http://127.0.0.1:50051")]
    pub learner: String,
    /// Environment id; must be the one the learner trains.
    #[arg(long, env = "PROXIMA_ENV", default_value = "CartPole-v1")]
    pub env: String,
    /// Environments stepped together in one batched forward pass (default: the learner's `actors.num_envs`).
    #[arg(long, env = "PROXIMA_NUM_ENVS", value_parser = parse_num_envs)]
    pub num_envs: Option<usize>,
    /// Steps per env per rollout (default: the learner's setting).
    #[arg(long, env = "PROXIMA_ROLLOUT_STEPS")]
    pub rollout_steps: Option<usize>,
    /// Name in the learner's logs (default: the host name).
    #[arg(long = "name", env = "PROXIMA_ACTOR_NAME", default_value_t = host_name())]
    pub name: String,
    /// Shared token the learner requires (`authorization: Bearer <token>`).
    #[arg(long, env = "PROXIMA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM CA certificate that signed the learner's TLS certificate (enables TLS).
    #[arg(long, env = "PROXIMA_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Name to verify in the learner's certificate (default: the URL's host).
    #[arg(long, env = "PROXIMA_TLS_DOMAIN")]
    pub tls_domain: Option<String>,
    /// Longest wait between reconnect attempts, in seconds.
    #[arg(long = "max-backoff-seconds", default_value = "10", value_parser = parse_seconds)]
    pub max_backoff: Duration,
    /// Largest gRPC message sent or accepted, in bytes.
    #[arg(long, default_value_t = 16 << 20)]
    pub max_message_bytes: usize,
    /// Longest wait for a newer policy after each rollout, in milliseconds (0: never wait; keeps data near
    /// on-policy without stalling when the learner needs more data per version).
    #[arg(long = "policy-wait-ms", env = "PROXIMA_POLICY_WAIT_MS", default_value = "250", value_parser = parse_policy_wait)]
    pub policy_wait: PolicyWait,
}

impl ActorOptions {
    /// Defaults for everything but the learner URL and env id.
    pub fn new(learner: impl Into<String>, env: impl Into<String>) -> Self {
        Self {
            learner: learner.into(),
            env: env.into(),
            num_envs: None,
            rollout_steps: None,
            name: host_name(),
            token: None,
            tls_ca: None,
            tls_domain: None,
            max_backoff: Duration::from_secs(10),
            max_message_bytes: 16 << 20,
            policy_wait: PolicyWait::UpTo(Duration::from_millis(250)),
        }
    }
}

/// The machine's host name, else `actor-<pid>`.
fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("actor-{}", std::process::id()))
}

/// A number of envs, at least 1.
fn parse_num_envs(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{s:?}: the number of envs must be a whole number, at least 1")),
    }
}

/// Seconds (at least 0.1) as a duration.
fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|e| format!("{s:?} is not a number of seconds: {e}"))?;
    match secs.is_finite() {
        true => Ok(Duration::from_secs_f64(secs.max(0.1))),
        false => Err(format!("{s:?} is not a number of seconds")),
    }
}

/// Milliseconds to wait for a newer policy (0: never wait).
fn parse_policy_wait(s: &str) -> Result<PolicyWait, String> {
    match s.parse::<u64>().map_err(|e| format!("{s:?} is not a number of milliseconds: {e}"))? {
        0 => Ok(PolicyWait::Never),
        ms => Ok(PolicyWait::UpTo(Duration::from_millis(ms))),
    }
}

/// Exponential backoff with full jitter: the n-th wait is uniform in [base, min(max, base * 2^n)].
struct Backoff {
    attempt: u32,
    base: Duration,
    max: Duration,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let cap = self.base.saturating_mul(1u32 << self.attempt.min(16)).min(self.max).max(self.base);
        self.attempt = self.attempt.saturating_add(1);
        rand::rng().random_range(self.base..=cap)
    }

    fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// How long connecting, registering and receiving the first policy may take before the session is retried.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a session with the learner ended.
enum SessionEnd {
    /// Shutdown requested; this many buffered rollouts were flushed.
    Shutdown { flushed: u64 },
}

/// The sampler thread and its channels, kept across reconnects so envs continue where they were.
struct Worker {
    /// Envs its sampler steps.
    num_envs: usize,
    cell: Arc<PolicyCell>,
    rollouts: tokio::sync::mpsc::Receiver<Rollout>,
    stop: CancellationToken,
    /// Ends with the number of rollouts the sampler collected and handed over.
    thread: std::thread::JoinHandle<Result<u64, Error>>,
    /// Rollouts of this sampler the learner answered.
    sent: u64,
}

type Client = pb::learner_client::LearnerClient<tonic::service::interceptor::InterceptedService<Channel, BearerToken>>;

/// Adds `authorization: Bearer <token>` to every call (when a token is set).
#[derive(Clone)]
struct BearerToken(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl BearerToken {
    fn new(token: Option<String>) -> Result<Self, Error> {
        let value = match token.filter(|t| !t.is_empty()) {
            Some(t) => Some(
                format!("Bearer {t}")
                    .parse()
                    .map_err(|_| Error::Config("token contains characters not allowed in gRPC metadata".into()))?,
            ),
            None => None,
        };
        Ok(Self(value))
    }
}

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

async fn connect(opts: &ActorOptions) -> Result<Client, Error> {
    // As the Python actor reads it: `host:port` is `http://host:port`; another scheme could never connect, and
    // retrying would hide the mistake.
    let url = match opts.learner.contains("://") {
        true => opts.learner.clone(),
        false => format!("http://{}", opts.learner),
    };
    if !url.starts_with("http://") && !url.starts_with("https://") {
        return Err(Error::Config(format!(
            "bad learner URL {:?}: expected http://HOST:PORT or https://HOST:PORT",
            opts.learner
        )));
    }
    let https = url.starts_with("https://");
    let mut endpoint = Endpoint::from_shared(url)
        .map_err(|e| Error::Config(format!("bad learner URL {:?}: {e}", opts.learner)))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10));
    if let Some(ca) = &opts.tls_ca {
        if !https {
            return Err(Error::Config(format!("--tls-ca needs an https:// learner URL, not {:?}", opts.learner)));
        }
        let tls = common::wire::client_tls(ca, opts.tls_domain.as_deref()).map_err(Error::Config)?;
        endpoint =
            endpoint.tls_config(tls).map_err(|e| Error::Config(format!("tls: {}", common::wire::with_causes(&e))))?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| Error::Unavailable(format!("cannot connect: {}", common::wire::with_causes(&e))))?;
    Ok(pb::learner_client::LearnerClient::with_interceptor(channel, BearerToken::new(opts.token.clone())?)
        .max_decoding_message_size(opts.max_message_bytes)
        .max_encoding_message_size(opts.max_message_bytes))
}

/// Maps a status from the learner: configuration problems are fatal, the rest are retried.
fn classify(status: Status) -> Error {
    match status.code() {
        Code::Unauthenticated | Code::FailedPrecondition | Code::PermissionDenied => {
            Error::Refused(format!("{:?}: {}", status.code(), status.message()))
        }
        _ => Error::Unavailable(format!("{:?}: {}", status.code(), status.message())),
    }
}

/// Runs the actor for the built-in env `opts.env` until `shutdown`; returns an error only for problems retrying
/// cannot fix (a refused registration, a bad URL, an env the learner does not train).
pub async fn run(opts: ActorOptions, shutdown: CancellationToken) -> Result<(), Error> {
    let factory = common::env::builtin_factory(&opts.env);
    run_env(opts, factory, shutdown).await
}

/// Runs the actor with the envs `factory` builds (a user's own [`common::env::Env`]) until `shutdown`;
/// `opts.env` is the id it registers with, which the learner must train (an `[env]` with the env's spaces).
pub async fn run_env(opts: ActorOptions, factory: EnvFactory, shutdown: CancellationToken) -> Result<(), Error> {
    let mut backoff = Backoff { attempt: 0, base: Duration::from_millis(100), max: opts.max_backoff };
    let mut worker: Option<Worker> = None;
    let mut last_problem: Option<String> = None;
    let mut flushed = 0;
    let mut result = loop {
        if shutdown.is_cancelled() {
            break Ok(());
        }
        match session(&opts, &factory, &mut worker, &shutdown, &mut backoff, &mut last_problem).await {
            Ok(SessionEnd::Shutdown { flushed: n }) => {
                flushed = n;
                break Ok(());
            }
            // The sampler thread ended by itself: its error (weights that no longer fit, a failing env) is not
            // something reconnecting can fix, and registering again would only fill the learner's registry.
            Err(Error::SamplerStopped) => {
                let ended = match worker.take() {
                    Some(w) => tokio::task::spawn_blocking(move || w.thread.join()).await,
                    None => break Err(Error::SamplerStopped),
                };
                break match ended {
                    Ok(Ok(Err(e))) => Err(e),
                    _ => Err(Error::SamplerStopped),
                };
            }
            Err(e @ (Error::Refused(_) | Error::Config(_) | Error::Env(_) | Error::Policy(_))) => break Err(e),
            Err(e) => {
                let problem = e.to_string();
                // Log once per change of state, not once per try.
                if last_problem.as_deref() != Some(problem.as_str()) {
                    tracing::warn!(learner = %opts.learner, error = %problem, "learner unreachable; retrying with backoff");
                    last_problem = Some(problem);
                }
                let wait = backoff.next();
                tokio::select! {
                    _ = shutdown.cancelled() => break Ok(()),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    };
    if let Some(w) = worker {
        w.stop.cancel();
        drop(w.rollouts);
        let sent = w.sent;
        let collected = match tokio::task::spawn_blocking(move || w.thread.join()).await {
            Ok(Ok(Ok(n))) => n,
            // A sampler that failed as the shutdown came: its error is the run's outcome.
            Ok(Ok(Err(e))) => {
                result = result.and(Err(e));
                sent
            }
            _ => {
                result = result.and(Err(Error::SamplerStopped));
                sent
            }
        };
        tracing::info!(collected, sent, flushed, "actor leaving");
        if collected > sent {
            tracing::warn!(
                unsent = collected - sent,
                "rollouts collected but not sent (the learner refused them or could not be reached, or the 2 s flush ran out)"
            );
        }
    }
    result
}

async fn session(
    opts: &ActorOptions,
    factory: &EnvFactory,
    worker: &mut Option<Worker>,
    shutdown: &CancellationToken,
    backoff: &mut Backoff,
    last_problem: &mut Option<String>,
) -> Result<SessionEnd, Error> {
    let reconnecting = worker.is_some();
    let probe = factory()?;
    let request = pb::RegisterRequest {
        actor_name: opts.name.clone(),
        env_id: opts.env.clone(),
        observation_space: Some((&probe.observation_space()).into()),
        action_space: Some((&probe.action_space()).into()),
        // Without --num-envs the learner's count, and the old default for a learner that predates the choice.
        num_envs: opts.num_envs.unwrap_or(DEFAULT_NUM_ENVS) as u32,
        protocol_version: PROTOCOL_VERSION as i32,
        learner_num_envs: opts.num_envs.is_none(),
    };
    // Connect, register, subscribe and the first policy: bounded (an endpoint that takes the connection and never
    // answers is retried, not waited on for ever) and given up at once on shutdown.
    let handshake = async {
        let mut client = connect(opts).await?;
        let reg = client
            .register(request)
            .await
            .map_err(|s| match s.code() {
                // A registration the learner finds invalid (a name above its limit) stays invalid on every retry.
                Code::InvalidArgument => Error::Refused(format!("{:?}: {}", s.code(), s.message())),
                _ => classify(s),
            })?
            .into_inner();
        let mut stream = client
            .subscribe_policy(pb::SubscribePolicyRequest { actor_id: reg.actor_id })
            .await
            .map_err(classify)?
            .into_inner();
        let first = stream
            .message()
            .await
            .map_err(classify)?
            .ok_or_else(|| Error::Unavailable("policy stream ended before the first policy".into()))?;
        Ok::<_, Error>((client, reg, stream, first))
    };
    let (mut client, reg, mut stream, first) = tokio::select! {
        done = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake) => done.map_err(|_| {
            Error::Unavailable(format!("no answer to the registration within {HANDSHAKE_TIMEOUT:?}"))
        })??,
        _ = shutdown.cancelled() => return Ok(SessionEnd::Shutdown { flushed: 0 }),
    };
    let num_envs = envs_to_step(opts, &reg);
    if let Some(old) = worker.take_if(|w| w.num_envs != num_envs) {
        tracing::warn!(
            from = old.num_envs,
            to = num_envs,
            "the learner asks for another number of envs; restarting the sampler"
        );
        let Worker { stop, thread, rollouts, .. } = old;
        stop.cancel();
        drop(rollouts);
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
    let w = match worker {
        Some(w) => {
            w.cell.publish(PolicySnapshot::from(first));
            w
        }
        None => worker.insert(start_worker(opts, factory, &reg, num_envs, PolicySnapshot::from(first))?),
    };
    tracing::info!(actor_id = reg.actor_id, run = %reg.run_id, version = reg.policy_version, "connected to learner");
    if reconnecting {
        metrics::counter!(common::metrics::ACTOR_RECONNECTS).increment(1);
    }
    metrics::gauge!(common::metrics::ACTOR_CONNECTED).set(1.0);
    backoff.reset();
    *last_problem = None;

    // Follow the policy stream into the cell; its end means the learner went away.
    let cell = w.cell.clone();
    let mut follower = tokio::spawn(async move {
        loop {
            match stream.message().await {
                Ok(Some(update)) => {
                    let s = PolicySnapshot::from(update);
                    metrics::histogram!(common::metrics::ACTOR_WEIGHT_LATENCY)
                        .record((common::policy::unix_now() - s.published_at).max(0.0));
                    metrics::gauge!(common::metrics::ACTOR_POLICY_VERSION).set(s.version as f64);
                    cell.publish(s);
                }
                Ok(None) => return Error::Unavailable("policy stream closed by the learner".into()),
                Err(status) => return classify(status),
            }
        }
    });

    let outcome = loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                let flushed = flush(&mut client, w, &reg).await;
                break Ok(SessionEnd::Shutdown { flushed });
            }
            ended = &mut follower => {
                break Err(ended.unwrap_or_else(|e| Error::Unavailable(format!("policy task failed: {e}"))));
            }
            rollout = w.rollouts.recv() => {
                let Some(rollout) = rollout else {
                    break Err(Error::SamplerStopped);
                };
                if let Err(e) = submit(&mut client, rollout, &reg).await {
                    break Err(e);
                }
                w.sent += 1;
            }
        }
    };
    follower.abort();
    metrics::gauge!(common::metrics::ACTOR_CONNECTED).set(0.0);
    outcome
}

async fn submit(client: &mut Client, mut rollout: Rollout, reg: &pb::RegisterResponse) -> Result<(), Error> {
    rollout.actor_id = ActorId(reg.actor_id);
    let steps = rollout.len() as u64;
    let message = pb::Rollout::from(&rollout);
    check_size(&message, reg.max_message_bytes)?;
    match client.submit_rollout(message).await {
        Ok(resp) => {
            match resp.into_inner().outcome() {
                pb::RolloutOutcome::Stale => Outcome::Stale.count_sent(),
                _ => Outcome::Accepted.count_sent(),
            }
            metrics::counter!(common::metrics::ACTOR_ENV_STEPS).increment(steps);
            Ok(())
        }
        // The learner restarted or forgot us (idle): register again.
        Err(s) if wire::rejection_reason(&s) == Some(reason::UNKNOWN_ACTOR) => {
            Err(Error::Unavailable(format!("learner no longer knows this actor: {}", s.message())))
        }
        Err(s) if s.code() == Code::InvalidArgument || s.code() == Code::ResourceExhausted => {
            // A bug on our side; the rollout is dropped, the actor carries on.
            Outcome::Rejected.count_sent();
            tracing::error!(code = ?s.code(), message = %s.message(), "learner rejected a rollout");
            Ok(())
        }
        Err(s) => Err(classify(s)),
    }
}

/// Refuses a rollout that would encode to more than the learner's `max_bytes` (0: a learner that does not say):
/// every rollout of this actor has the same size, so the actor stops and names the settings to change.
fn check_size(message: &pb::Rollout, max_bytes: u64) -> Result<(), Error> {
    let size = prost::Message::encoded_len(message) as u64;
    if max_bytes > 0 && size > max_bytes {
        return Err(Error::Refused(format!(
            "a rollout of {} envs x {} steps encodes to {size} bytes, above the learner's limit of {max_bytes} \
             (server.max_message_bytes): raise it on the learner, or lower actors.rollout_steps or the envs per \
             actor (actors.num_envs, --num-envs)",
            message.num_envs, message.num_steps
        )));
    }
    Ok(())
}

/// Stops the sampler and sends what it still has (the rollouts queued and the one in progress, for at most two
/// seconds) before leaving; returns how many it sent.
async fn flush(client: &mut Client, w: &mut Worker, reg: &pb::RegisterResponse) -> u64 {
    w.stop.cancel();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let mut flushed = 0;
    while let Ok(Some(r)) = tokio::time::timeout_at(deadline, w.rollouts.recv()).await {
        if submit(client, r, reg).await.is_err() {
            break;
        }
        w.sent += 1;
        flushed += 1;
    }
    flushed
}

/// The envs to step: what the learner's registration answer names, else (a learner from before it did) the
/// `--num-envs` given or the default.
fn envs_to_step(opts: &ActorOptions, reg: &pb::RegisterResponse) -> usize {
    match (reg.num_envs as usize, opts.num_envs) {
        (0, Some(n)) => n,
        (0, None) => {
            tracing::info!("the learner names no env count (an earlier release); stepping {DEFAULT_NUM_ENVS} envs");
            DEFAULT_NUM_ENVS
        }
        (n, _) => n,
    }
}

fn start_worker(
    opts: &ActorOptions,
    factory: &EnvFactory,
    reg: &pb::RegisterResponse,
    num_envs: usize,
    first: PolicySnapshot,
) -> Result<Worker, Error> {
    let sampler_cfg = SamplerConfig {
        num_envs,
        rollout_steps: opts.rollout_steps.unwrap_or(reg.rollout_steps.max(1) as usize),
        policy_wait: opts.policy_wait,
    };
    let sampler = Sampler::from_factory(factory, &sampler_cfg, reg.seed)?;
    // The model is the one each snapshot carries; the registration's hidden sizes describe snapshots of learners
    // from before the model spec.
    let hidden: Vec<usize> = reg.hidden_sizes.iter().map(|&h| h as usize).collect();
    let model = ModelSpec::legacy(&hidden, Activation::Tanh, &sampler.observation_space(), &sampler.action_space());
    // Fail fast if the weights do not fit the env (e.g. a learner for another env).
    common::policy::Policy::from_snapshot(&model, &first)?;
    let cell = Arc::new(PolicyCell::new(first));
    let (tx, rx) = tokio::sync::mpsc::channel::<Rollout>(1);
    let stop = CancellationToken::new();
    let (c, s) = (cell.clone(), stop.clone());
    let thread = std::thread::Builder::new()
        .name("sampler".into())
        .spawn(move || run_sampler(sampler, &model, &c, &tx, &s))
        .map_err(|e| Error::Config(format!("cannot start the sampler thread: {e}")))?;
    Ok(Worker { num_envs, cell, rollouts: rx, stop, thread, sent: 0 })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A rollout above the learner's limit is refused before it is sent, naming the settings; a learner that does
    /// not say (0) is not checked.
    #[test]
    fn a_rollout_above_the_learners_limit_is_refused_naming_the_settings() {
        let message = pb::Rollout { num_envs: 8, num_steps: 128, obs: vec![0; 1000].into(), ..Default::default() };
        let size = prost::Message::encoded_len(&message) as u64;
        assert!(check_size(&message, 0).is_ok());
        assert!(check_size(&message, size).is_ok());
        match check_size(&message, size - 1) {
            Err(Error::Refused(text)) => {
                assert!(text.contains("server.max_message_bytes") && text.contains("actors.rollout_steps"), "{text}")
            }
            other => panic!("not refused: {other:?}"),
        }
    }

    /// A learner URL with another scheme is a configuration error (fatal, not retried); `HOST:PORT` alone is
    /// `http://HOST:PORT`, and a failed connection names its cause, not only "transport error".
    #[test]
    fn learner_urls_and_connection_causes() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let result = |url: String| runtime.block_on(connect(&ActorOptions::new(url, "CartPole-v1"))).err();
        match result(format!("ftp://{closed}")) {
            Some(Error::Config(text)) => assert!(text.contains("http://HOST:PORT"), "{text}"),
            other => panic!("not a configuration error: {other:?}"),
        }
        for url in [closed.to_string(), format!("http://{closed}")] {
            match result(url.clone()) {
                Some(Error::Unavailable(text)) => assert!(text.contains("refused"), "{url}: {text}"),
                other => panic!("{url}: not unavailable: {other:?}"),
            }
        }
    }

    /// An endpoint that takes the connection and never answers (a listening socket nobody serves) does not hold a
    /// shutdown up: the actor gives up the handshake and returns at once.
    #[test]
    fn shutdown_is_not_held_up_by_a_silent_endpoint() {
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", silent.local_addr().unwrap());
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let took = runtime.block_on(async {
            let stop = CancellationToken::new();
            let actor = tokio::spawn(run(ActorOptions::new(url, "CartPole-v1"), stop.clone()));
            tokio::time::sleep(Duration::from_millis(500)).await;
            let asked = std::time::Instant::now();
            stop.cancel();
            let ended = tokio::time::timeout(Duration::from_secs(5), actor).await;
            assert!(matches!(ended, Ok(Ok(Ok(())))), "{ended:?}");
            asked.elapsed()
        });
        assert!(took < Duration::from_secs(1), "the actor took {took:?} to stop");
    }

    /// The n-th wait is uniform in [base, min(max, base * 2^n)]: it grows, it is capped, it is jittered, and a reset
    /// starts over.
    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let (base, max) = (Duration::from_millis(100), Duration::from_secs(10));
        let mut b = Backoff { attempt: 0, base, max };
        let mut per_attempt: Vec<Vec<Duration>> = vec![Vec::new(); 10];
        for _ in 0..200 {
            b.reset();
            for waits in per_attempt.iter_mut() {
                waits.push(b.next());
            }
        }
        for (n, waits) in per_attempt.iter().enumerate() {
            let cap = base.saturating_mul(1 << n).min(max);
            assert!(waits.iter().all(|w| (base..=cap).contains(w)), "attempt {n}: outside [{base:?}, {cap:?}]");
            if n > 0 {
                let (lo, hi) = (waits.iter().min(), waits.iter().max());
                assert!(lo < hi, "attempt {n}: no jitter in {} draws", waits.len());
            }
        }
        // Late attempts reach the cap's neighbourhood but never pass it.
        let late = &per_attempt[9];
        assert!(late.iter().any(|w| *w > max / 2) && late.iter().all(|w| *w <= max));
        assert_eq!(b.attempt, 10);
        b.reset();
        assert_eq!(b.next(), base, "the first wait after a reset is the base");
    }
}
