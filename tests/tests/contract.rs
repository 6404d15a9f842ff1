//! Contract tests of the learner's gRPC service (`proto/ppo/v1/ppo.proto`), against an in-process server on an
//! ephemeral loopback port: every kind of bad request gets its documented status code and a message naming the
//! problem, nothing bad reaches the trainer, and the learner keeps serving well-behaved actors afterwards.
//!
//! "Nothing reached the trainer" is checked exactly: the learner trains on one rollout per update (2 envs x 16
//! steps), rejected rollouts carry an episode record with return [`BAD_RETURN`], and the one good rollout carries
//! [`GOOD_RETURN`]; the first row of `progress.csv` must then be version 1, 32 env steps, one episode, mean
//! return [`GOOD_RETURN`].

use actor::{Sampler, SamplerConfig};
use common::env::EpisodeStats;
use common::model::ModelConfig;
use common::policy::{Policy, PolicySnapshot};
use common::rollout::Rollout;
use common::wire::{PROTOCOL_VERSION, pb};
use learner::config::TrainConfig;
use learner::serve::{ServeOptions, ServerHandle};
use learner::training::LoopOutcome;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

const ENV: &str = "CartPole-v1";
const TOKEN: &str = "contract-test-token";
const NUM_ENVS: usize = 2;
const ROLLOUT_STEPS: usize = 16;
/// Episode return written into the one rollout that must be accepted and trained on.
const GOOD_RETURN: f64 = 123.0;
/// Episode return written into every rollout that must be rejected.
const BAD_RETURN: f64 = 999.0;
/// Bound on every test, so a hung server fails the test instead of hanging it.
const TEST_TIMEOUT: Duration = Duration::from_secs(90);
/// Bound on single waits inside a test.
const WAIT: Duration = Duration::from_secs(30);

/// Runs `body` under [`TEST_TIMEOUT`].
async fn bounded<F: Future<Output = ()>>(body: F) {
    tokio::time::timeout(TEST_TIMEOUT, body).await.expect("test timed out");
}

/// An in-process learner on 127.0.0.1:0 with its own temporary run directory.
struct Server {
    addr: SocketAddr,
    handle: ServerHandle,
    task: tokio::task::JoinHandle<learner::Result<LoopOutcome>>,
    run_dir: PathBuf,
    _runs: tempfile::TempDir,
}

impl Server {
    /// A token-protected CartPole learner that updates on every rollout of 2 envs x 16 steps; `extra` overrides.
    async fn start(extra: &[&str]) -> Self {
        let runs = tempfile::tempdir().expect("temporary runs dir");
        let mut overrides = vec![
            format!("env={ENV:?}"),
            format!("runs_dir={:?}", runs.path().display().to_string()),
            "run_name=\"contract\"".to_string(),
            format!("actors.num_envs={NUM_ENVS}"),
            format!("actors.rollout_steps={ROLLOUT_STEPS}"),
            format!("ppo.minibatch_size={}", NUM_ENVS * ROLLOUT_STEPS),
            "ppo.num_epochs=2".to_string(),
            "total_steps=1000000".to_string(),
        ];
        overrides.extend(extra.iter().map(|s| s.to_string()));
        let cfg = TrainConfig::load(None, &overrides).expect("contract test config");
        let opts = ServeOptions { token: Some(TOKEN.into()), ..Default::default() };
        let (handle, task) = learner::serve::spawn(cfg, opts, "127.0.0.1:0").await.expect("learner starts");
        assert!(handle.addr.ip().is_loopback(), "learner bound {}", handle.addr);
        let run_dir = runs.path().join("contract");
        Self { addr: handle.addr, handle, task, run_dir, _runs: runs }
    }

    /// Shuts the learner down gracefully and returns how training ended.
    async fn stop(self) -> LoopOutcome {
        self.handle.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("learner stops within the timeout")
            .expect("learner task did not panic")
            .expect("learner ends without error")
    }
}

/// Adds `authorization: Bearer <token>` (when set) to every call.
#[derive(Clone)]
struct Bearer(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

type Client = pb::learner_client::LearnerClient<InterceptedService<Channel, Bearer>>;

async fn channel(addr: SocketAddr) -> Channel {
    let endpoint = Endpoint::from_shared(format!("http://{addr}")).expect("endpoint URL");
    tokio::time::timeout(WAIT, endpoint.connect()).await.expect("connect timed out").expect("connect to the learner")
}

/// A client presenting `token` (none: no authorization metadata at all).
async fn client(addr: SocketAddr, token: Option<&str>) -> Client {
    let value = token.map(|t| format!("Bearer {t}").parse().expect("token is valid metadata"));
    pb::learner_client::LearnerClient::with_interceptor(channel(addr).await, Bearer(value))
}

/// A registration that matches the learner in every respect.
fn register_request() -> pb::RegisterRequest {
    let env = common::env::make(ENV).expect("CartPole exists");
    pb::RegisterRequest {
        actor_name: "contract-test".into(),
        env_id: ENV.into(),
        observation_space: Some((&env.observation_space()).into()),
        action_space: Some((&env.action_space()).into()),
        num_envs: NUM_ENVS as u32,
        protocol_version: PROTOCOL_VERSION as i32,
    }
}

/// A registered actor following the policy stream, with a real sampler and the learner's current policy.
struct GoodActor {
    client: Client,
    id: u64,
    updates: tonic::Streaming<pb::PolicyUpdate>,
    sampler: Sampler,
    policy: Policy,
}

impl GoodActor {
    async fn connect(addr: SocketAddr) -> Self {
        let mut client = client(addr, Some(TOKEN)).await;
        let reg = client.register(register_request()).await.expect("a valid registration is accepted").into_inner();
        assert_eq!(reg.rollout_steps as usize, ROLLOUT_STEPS);
        let mut updates = client
            .subscribe_policy(pb::SubscribePolicyRequest { actor_id: reg.actor_id })
            .await
            .expect("a registered actor may subscribe")
            .into_inner();
        let first = tokio::time::timeout(WAIT, updates.message())
            .await
            .expect("first policy within the timeout")
            .expect("policy stream works")
            .expect("the stream starts with the current policy");
        assert_eq!(first.version, reg.policy_version, "the stream starts with the version Register announced");
        let snapshot =
            PolicySnapshot { version: first.version, weights: first.weights, published_at: first.published_at };
        let sampler_cfg = SamplerConfig { num_envs: NUM_ENVS, rollout_steps: ROLLOUT_STEPS, ..Default::default() };
        let sampler = Sampler::new(ENV, &sampler_cfg, reg.seed).expect("sampler");
        let model = ModelConfig {
            hidden_sizes: reg.hidden_sizes.iter().map(|&h| h as usize).collect(),
            ..ModelConfig::default()
        };
        let policy = Policy::from_snapshot(&model, sampler.obs_dim(), &sampler.action_space(), &snapshot)
            .expect("the published weights fit the announced model");
        Self { client, id: reg.actor_id, updates, sampler, policy }
    }

    /// A valid rollout of this actor whose only episode record has return `marker`.
    fn rollout(&mut self, marker: f64) -> Rollout {
        let mut r = self.sampler.collect(&mut self.policy).expect("collect a rollout");
        r.actor_id = self.id;
        r.episodes = vec![EpisodeStats { env_index: 0, episode_return: marker, length: 1 }];
        r
    }

    /// A valid rollout that must be rejected once broken; marked [`BAD_RETURN`].
    fn bad_rollout(&mut self) -> Rollout {
        self.rollout(BAD_RETURN)
    }

    /// Submits a valid rollout and checks it is ACCEPTED, trained on as the first and only update (so no rejected
    /// rollout ever reached the trainer), and published to the policy stream.
    async fn check_accepted_and_trained(&mut self, run_dir: &std::path::Path) {
        let good = pb::Rollout::from(&self.rollout(GOOD_RETURN));
        let resp = self.client.submit_rollout(good).await.expect("a valid rollout is taken").into_inner();
        assert_eq!(resp.outcome(), pb::RolloutOutcome::Accepted, "{resp:?}");
        let version = tokio::time::timeout(WAIT, async {
            loop {
                let update = self.updates.message().await.expect("policy stream works").expect("stream stays open");
                if update.version >= 1 {
                    break update.version;
                }
            }
        })
        .await
        .expect("the learner publishes a new policy after the accepted rollout");
        assert_eq!(version, 1, "exactly one update");
        // The trainer publishes the policy before it appends the progress row: wait for the row.
        let deadline = std::time::Instant::now() + WAIT;
        let rows = loop {
            let rows = tests::read_progress(run_dir);
            if !rows.is_empty() || std::time::Instant::now() > deadline {
                break rows;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        let first = rows.first().expect("progress.csv has a row for the update");
        assert_eq!(first.policy_version, 1, "{rows:?}");
        assert_eq!(first.env_steps, (NUM_ENVS * ROLLOUT_STEPS) as u64, "{rows:?}");
        assert_eq!(first.episodes, 1, "only the good rollout's episode was counted: {rows:?}");
        assert_eq!(first.mean_return, Some(GOOD_RETURN), "the first update trained on the good rollout: {rows:?}");
    }
}

/// Asserts `result` failed with `code` and a message containing every one of `needles`.
fn assert_status<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, needles: &[&str], what: &str) -> Status {
    let status = match result {
        Ok(v) => panic!("{what}: expected {code:?}, got OK {v:?}"),
        Err(s) => s,
    };
    assert_eq!(status.code(), code, "{what}: {status:?}");
    for needle in needles {
        assert!(status.message().contains(needle), "{what}: message {:?} does not name {needle:?}", status.message());
    }
    println!("{what}: {:?} {:?}", status.code(), status.message());
    status
}

/// Submits `rollout` and asserts the rejection.
async fn assert_rejected(actor: &mut GoodActor, rollout: pb::Rollout, code: Code, needles: &[&str], what: &str) {
    let result = actor.client.submit_rollout(rollout).await.map(|r| r.into_inner());
    assert_status(result, code, needles, what);
}

// ---- the rejections ------------------------------------------------------------------------------------------

async fn unauthenticated_cases(server: &Server, actor: &mut GoodActor) {
    for (token, what) in [(None, "no token"), (Some("wrong-token"), "wrong token"), (Some(""), "empty token")] {
        let mut c = client(server.addr, token).await;
        let r = c.register(register_request()).await;
        assert_status(r, Code::Unauthenticated, &[], &format!("Register with {what}"));
        let rollout = pb::Rollout::from(&actor.bad_rollout());
        let r = c.submit_rollout(rollout).await;
        assert_status(r, Code::Unauthenticated, &[], &format!("SubmitRollout with {what}"));
        let r = c.subscribe_policy(pb::SubscribePolicyRequest { actor_id: actor.id }).await;
        assert_status(r, Code::Unauthenticated, &[], &format!("SubscribePolicy with {what}"));
    }
    // The token without the `Bearer ` scheme is the token; a different scheme is not.
    let value: MetadataValue<Ascii> = format!("Basic {TOKEN}").parse().expect("metadata");
    let mut c = pb::learner_client::LearnerClient::with_interceptor(channel(server.addr).await, Bearer(Some(value)));
    let r = c.submit_rollout(pb::Rollout::from(&actor.bad_rollout())).await;
    assert_status(r, Code::Unauthenticated, &[], "SubmitRollout with a Basic scheme");
}

async fn env_mismatch_case(server: &Server) {
    let mut c = client(server.addr, Some(TOKEN)).await;
    let request = pb::RegisterRequest { env_id: "Acrobot-v1".into(), ..register_request() };
    let r = c.register(request).await;
    assert_status(r, Code::FailedPrecondition, &["Acrobot-v1", ENV], "Register with another env id");
}

async fn action_space_mismatch_case(server: &Server) {
    let mut c = client(server.addr, Some(TOKEN)).await;
    let three = common::env::Space::Discrete { n: 3 };
    let request = pb::RegisterRequest { action_space: Some((&three).into()), ..register_request() };
    let r = c.register(request).await;
    assert_status(r, Code::FailedPrecondition, &["action space", "Discrete(3)", "Discrete(2)"], "Discrete(3) actions");
    let request = pb::RegisterRequest { action_space: None, ..register_request() };
    let r = c.register(request).await;
    assert_status(r, Code::FailedPrecondition, &["action space"], "Register without an action space");
    let bad_obs = common::env::Space::Box { low: vec![-1.0; 3], high: vec![1.0; 3] };
    let request = pb::RegisterRequest { observation_space: Some((&bad_obs).into()), ..register_request() };
    let r = c.register(request).await;
    assert_status(r, Code::FailedPrecondition, &["observation space", "Box(3)", "Box(4)"], "Box(3) observations");
}

async fn protocol_mismatch_case(server: &Server) {
    let mut c = client(server.addr, Some(TOKEN)).await;
    for version in [pb::ProtocolVersion::Unspecified as i32, PROTOCOL_VERSION as i32 + 1] {
        let request = pb::RegisterRequest { protocol_version: version, ..register_request() };
        let r = c.register(request).await;
        assert_status(r, Code::FailedPrecondition, &["protocol version"], &format!("protocol version {version}"));
    }
}

async fn nan_reward_case(actor: &mut GoodActor) {
    let mut r = actor.bad_rollout();
    r.rewards[3] = f32::NAN;
    assert_rejected(actor, pb::Rollout::from(&r), Code::InvalidArgument, &["rewards"], "NaN reward").await;
    let mut r = actor.bad_rollout();
    r.rewards[0] = f32::INFINITY;
    assert_rejected(actor, pb::Rollout::from(&r), Code::InvalidArgument, &["rewards"], "infinite reward").await;
}

async fn truncated_obs_case(actor: &mut GoodActor) {
    let mut r = actor.bad_rollout();
    r.obs.pop();
    assert_rejected(actor, pb::Rollout::from(&r), Code::InvalidArgument, &["obs"], "obs one f32 short").await;
    // A byte string that is not a whole number of f32 at all.
    let mut m = pb::Rollout::from(&actor.bad_rollout());
    m.obs = m.obs.slice(..m.obs.len() - 1);
    assert_rejected(actor, m, Code::InvalidArgument, &["obs"], "obs one byte short").await;
}

async fn action_out_of_range_case(actor: &mut GoodActor) {
    let mut r = actor.bad_rollout();
    r.actions[5] = 2.0;
    assert_rejected(actor, pb::Rollout::from(&r), Code::InvalidArgument, &["actions"], "action 2 in Discrete(2)").await;
    let mut r = actor.bad_rollout();
    r.actions[0] = 0.5;
    assert_rejected(actor, pb::Rollout::from(&r), Code::InvalidArgument, &["actions"], "action 0.5").await;
}

async fn future_version_case(actor: &mut GoodActor) {
    let mut r = actor.bad_rollout();
    r.policy_version = 1_000;
    let what = "policy version from the future";
    assert_rejected(actor, pb::Rollout::from(&r), Code::InvalidArgument, &["policy_version"], what).await;
}

async fn unknown_actor_case(actor: &mut GoodActor) {
    let mut r = actor.bad_rollout();
    r.actor_id = actor.id + 1_000_000;
    let what = "unknown actor id";
    assert_rejected(actor, pb::Rollout::from(&r), Code::InvalidArgument, &["actor_id"], what).await;
    let r = actor.client.subscribe_policy(pb::SubscribePolicyRequest { actor_id: actor.id + 1_000_000 }).await;
    assert_status(r, Code::InvalidArgument, &["actor_id"], "SubscribePolicy with an unknown actor id");
}

/// Needs a server with `server.max_message_bytes=65536`.
async fn oversized_case(actor: &mut GoodActor) {
    // 2 envs x 2048 steps: obs alone are 64 KiB, the whole message about 2.3x that.
    let cfg = SamplerConfig { num_envs: NUM_ENVS, rollout_steps: 2048, ..Default::default() };
    let mut big = Sampler::new(ENV, &cfg, 7).expect("sampler").collect(&mut actor.policy).expect("collect");
    big.actor_id = actor.id;
    big.episodes = vec![EpisodeStats { env_index: 0, episode_return: BAD_RETURN, length: 1 }];
    let m = pb::Rollout::from(&big);
    let size = prost_len(&m);
    assert!(size > 65_536, "the oversized rollout is only {size} bytes");
    assert_rejected(actor, m, Code::ResourceExhausted, &["too large"], &format!("rollout of {size} bytes")).await;
}

/// Encoded size of a rollout: its packed buffers plus a little framing (a lower bound is all the test needs).
fn prost_len(m: &pb::Rollout) -> usize {
    [&m.obs, &m.actions, &m.log_probs, &m.values, &m.rewards, &m.terminated, &m.truncated, &m.final_obs, &m.next_obs]
        .iter()
        .map(|b| b.len())
        .sum()
}

// ---- the tests -------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_wrong_token_is_unauthenticated() {
    bounded(async {
        let server = Server::start(&[]).await;
        let mut actor = GoodActor::connect(server.addr).await;
        unauthenticated_cases(&server, &mut actor).await;
        actor.check_accepted_and_trained(&server.run_dir).await;
        assert_eq!(server.stop().await.env_steps, (NUM_ENVS * ROLLOUT_STEPS) as u64);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_env_id_is_failed_precondition() {
    bounded(async {
        let server = Server::start(&[]).await;
        env_mismatch_case(&server).await;
        GoodActor::connect(server.addr).await.check_accepted_and_trained(&server.run_dir).await;
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_spaces_are_failed_precondition() {
    bounded(async {
        let server = Server::start(&[]).await;
        action_space_mismatch_case(&server).await;
        GoodActor::connect(server.addr).await.check_accepted_and_trained(&server.run_dir).await;
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_protocol_version_is_failed_precondition() {
    bounded(async {
        let server = Server::start(&[]).await;
        protocol_mismatch_case(&server).await;
        GoodActor::connect(server.addr).await.check_accepted_and_trained(&server.run_dir).await;
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nan_reward_is_invalid_argument() {
    bounded(async {
        let server = Server::start(&[]).await;
        let mut actor = GoodActor::connect(server.addr).await;
        nan_reward_case(&mut actor).await;
        actor.check_accepted_and_trained(&server.run_dir).await;
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_obs_is_invalid_argument() {
    bounded(async {
        let server = Server::start(&[]).await;
        let mut actor = GoodActor::connect(server.addr).await;
        truncated_obs_case(&mut actor).await;
        actor.check_accepted_and_trained(&server.run_dir).await;
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn action_out_of_range_is_invalid_argument() {
    bounded(async {
        let server = Server::start(&[]).await;
        let mut actor = GoodActor::connect(server.addr).await;
        action_out_of_range_case(&mut actor).await;
        actor.check_accepted_and_trained(&server.run_dir).await;
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn future_policy_version_is_invalid_argument() {
    bounded(async {
        let server = Server::start(&[]).await;
        let mut actor = GoodActor::connect(server.addr).await;
        future_version_case(&mut actor).await;
        actor.check_accepted_and_trained(&server.run_dir).await;
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_actor_id_is_invalid_argument() {
    bounded(async {
        let server = Server::start(&[]).await;
        let mut actor = GoodActor::connect(server.addr).await;
        unknown_actor_case(&mut actor).await;
        actor.check_accepted_and_trained(&server.run_dir).await;
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_rollout_is_resource_exhausted() {
    bounded(async {
        let server = Server::start(&["server.max_message_bytes=65536"]).await;
        let mut actor = GoodActor::connect(server.addr).await;
        oversized_case(&mut actor).await;
        actor.check_accepted_and_trained(&server.run_dir).await;
        server.stop().await;
    })
    .await;
}

/// Every rejection against one server, most of them over one connection; then a new, well-behaved actor
/// registers, follows the policy stream and gets a rollout accepted and trained on: the learner kept serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learner_keeps_serving_after_every_rejection() {
    bounded(async {
        let server = Server::start(&["server.max_message_bytes=65536"]).await;
        let mut actor = GoodActor::connect(server.addr).await;
        unauthenticated_cases(&server, &mut actor).await;
        env_mismatch_case(&server).await;
        action_space_mismatch_case(&server).await;
        protocol_mismatch_case(&server).await;
        nan_reward_case(&mut actor).await;
        truncated_obs_case(&mut actor).await;
        action_out_of_range_case(&mut actor).await;
        future_version_case(&mut actor).await;
        unknown_actor_case(&mut actor).await;
        oversized_case(&mut actor).await;
        // The connection that sent all of the above still works for a valid call.
        let again = actor.client.register(register_request()).await.expect("the same connection still registers");
        assert_ne!(again.into_inner().actor_id, actor.id, "every registration gets its own id");
        let mut newcomer = GoodActor::connect(server.addr).await;
        newcomer.check_accepted_and_trained(&server.run_dir).await;
        let outcome = server.stop().await;
        assert_eq!((outcome.policy_version, outcome.env_steps), (1, (NUM_ENVS * ROLLOUT_STEPS) as u64));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_reports_serving() {
    bounded(async {
        let server = Server::start(&[]).await;
        // Health is not behind the token: load balancers and orchestrators probe it without one.
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel(server.addr).await);
        let request = tonic_health::pb::HealthCheckRequest { service: "ppo.v1.Learner".into() };
        let resp = health.check(request).await.expect("health check answers").into_inner();
        assert_eq!(resp.status(), tonic_health::pb::health_check_response::ServingStatus::Serving);
        let unknown = tonic_health::pb::HealthCheckRequest { service: "no.such.Service".into() };
        let r = health.check(unknown).await;
        assert_status(r, Code::NotFound, &[], "health of an unknown service");
        server.stop().await;
    })
    .await;
}
