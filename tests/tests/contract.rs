//! Contract tests of the learner's gRPC service (`proto/ppo/v1/ppo.proto`), against an in-process server on an
//! ephemeral loopback port: every kind of bad request gets its documented status code and a message naming the
//! problem, nothing bad reaches the trainer, and the learner keeps serving well-behaved actors afterwards.
//!
//! Rejections are also counted: the tests that check `proxima_learner_rejected_total{reason}` run on a
//! current-thread runtime whose thread records into a Prometheus recorder of the test's own (the in-process
//! learner's handlers run on that thread too), so the counts are exactly that test's requests.
//!
//! "Nothing reached the trainer" is checked exactly: the learner trains on one rollout per update (2 envs x 16
//! steps), rejected rollouts carry an episode record with return [`BAD_RETURN`], and the one good rollout carries
//! [`GOOD_RETURN`]; the first row of `progress.csv` must then be version 1, 32 env steps, one episode, mean
//! return [`GOOD_RETURN`].

use actor::{Sampler, SamplerConfig};
use common::env::EpisodeStats;
use common::ids::{ActorId, PolicyVersion};
use common::model::{Activation, ModelSpec};
use common::policy::{Policy, PolicySnapshot};
use common::rollout::Rollout;
use common::wire::{PROTOCOL_VERSION, pb};
use learner::config::TrainConfig;
use learner::run::update_loop::LoopOutcome;
use learner::server::{ServeOptions, ServerHandle};
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

/// The counters of one test's own recorder.
struct Counts(metrics_exporter_prometheus::PrometheusHandle);

impl Counts {
    /// `proxima_learner_rejected_total{reason}` (0 before it was first counted).
    fn rejected(&self, reason: &str) -> f64 {
        let text = self.0.render();
        let prefix = format!("{}{{reason=\"{reason}\"}} ", common::metrics::REJECTED);
        text.lines().find_map(|l| l.strip_prefix(prefix.as_str())).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0)
    }
}

/// Runs `body` (under [`TEST_TIMEOUT`]) on a current-thread runtime that records metrics into a recorder of its
/// own: the in-process learner's handlers run on this thread, so [`Counts`] holds exactly this test's rejections.
fn with_own_counts<F: Future<Output = ()>>(body: impl FnOnce(Counts) -> F) {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let counts = Counts(recorder.handle());
    let _local = metrics::set_default_local_recorder(&recorder);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    rt.block_on(bounded(body(counts)));
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
        let (handle, task) = learner::server::spawn(cfg, opts, "127.0.0.1:0").await.expect("learner starts");
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
        learner_num_envs: false,
    }
}

/// A registered actor following the policy stream, with a real sampler and the learner's current policy.
struct GoodActor {
    client: Client,
    id: u64,
    updates: tonic::Streaming<pb::PolicyUpdate>,
    sampler: Sampler,
    policy: Policy,
    incarnation: u64,
    model: ModelSpec,
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
        let snapshot = PolicySnapshot {
            version: first.version,
            weights: first.weights,
            published_at: first.published_at,
            incarnation: first.incarnation,
        };
        let sampler_cfg = SamplerConfig { num_envs: NUM_ENVS, rollout_steps: ROLLOUT_STEPS, ..Default::default() };
        let sampler = Sampler::new(ENV, &sampler_cfg, reg.seed).expect("sampler");
        let hidden: Vec<usize> = reg.hidden_sizes.iter().map(|&h| h as usize).collect();
        let model = ModelSpec::legacy(&hidden, Activation::Tanh, &sampler.observation_space(), &sampler.action_space());
        let policy = Policy::from_snapshot(&model, &snapshot).expect("the published weights fit the announced model");
        assert_eq!(first.incarnation, reg.incarnation, "the stream carries the learner's incarnation");
        Self { client, id: reg.actor_id, updates, sampler, policy, incarnation: reg.incarnation, model }
    }

    /// Waits for a published policy of at least `version`, checks that its weights are finite (the decoder
    /// refuses NaN and infinity) and acts with it; returns its version.
    async fn next_policy(&mut self, version: u64, what: &str) -> u64 {
        let update = tokio::time::timeout(WAIT, async {
            loop {
                let u = self.updates.message().await.expect("policy stream works").expect("stream stays open");
                if u.version >= version {
                    break u;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{what}: no policy version {version} within {WAIT:?}"));
        let snapshot = PolicySnapshot {
            version: update.version,
            weights: update.weights,
            published_at: update.published_at,
            incarnation: update.incarnation,
        };
        self.policy = Policy::from_snapshot(&self.model, &snapshot)
            .unwrap_or_else(|e| panic!("{what}: policy v{} is unusable: {e}", update.version));
        update.version
    }

    /// A valid rollout of this actor in which no episode ends.
    fn quiet_rollout(&mut self) -> Rollout {
        let mut r = self.sampler.collect(&mut self.policy).expect("collect a rollout");
        r.actor_id = ActorId(self.id);
        r.terminated.fill(false);
        r.truncated.fill(false);
        f32s(&mut r.final_obs).clear();
        r.episodes.clear();
        r
    }

    /// A valid first rollout of this actor with one episode the learner sees whole: env 0's episode in progress
    /// ends at step 0 (its record is accepted within `server.max_abs_reward` per unseen step, but not counted: the
    /// learner did not see it whole), and the next one lasts one step, at step 1, with reward and return `marker`:
    /// the only episode the learner counts.
    fn rollout(&mut self, marker: f64) -> Rollout {
        let mut r = self.quiet_rollout();
        let at_step_1 = NUM_ENVS;
        r.terminated[0] = true;
        r.terminated[at_step_1] = true;
        r.rewards[at_step_1] = marker as f32;
        r.episodes = vec![
            EpisodeStats { env_index: 0, episode_return: f64::from(r.rewards[0]) + 999.0, length: 1000 },
            EpisodeStats { env_index: 0, episode_return: marker, length: 1 },
        ];
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
    if code != Code::NotFound {
        let reason = common::wire::rejection_reason(&status);
        assert!(
            reason.is_some_and(|r| common::metrics::reason::ALL.contains(&r)),
            "{what}: the rejection carries no documented reason under {}: {reason:?}",
            common::wire::REASON_KEY
        );
    }
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
        let status = assert_status(r, Code::Unauthenticated, &[], &format!("SubscribePolicy with {what}"));
        assert_eq!(common::wire::rejection_reason(&status), Some(common::metrics::reason::UNAUTHENTICATED));
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
    let bad_obs = common::env::Space::vector(vec![-1.0; 3], vec![1.0; 3]);
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
    f32s(&mut r.obs).pop();
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
    r.policy_version = PolicyVersion(1_000);
    let what = "policy version from the future";
    assert_rejected(actor, pb::Rollout::from(&r), Code::InvalidArgument, &["policy_version"], what).await;
}

async fn unknown_actor_case(actor: &mut GoodActor) {
    let mut r = actor.bad_rollout();
    r.actor_id = ActorId(actor.id + 1_000_000);
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
    big.actor_id = ActorId(actor.id);
    big.episodes = vec![EpisodeStats { env_index: 0, episode_return: BAD_RETURN, length: 1 }];
    let m = pb::Rollout::from(&big);
    let size = prost_len(&m);
    assert!(size > 65_536, "the oversized rollout is only {size} bytes");
    let r = actor.client.submit_rollout(m).await;
    let status = assert_status(r, Code::ResourceExhausted, &["too large"], &format!("rollout of {size} bytes"));
    assert_eq!(common::wire::rejection_reason(&status), Some(common::metrics::reason::OVERSIZED));
}

/// Encoded size of a rollout: its packed buffers plus a little framing (a lower bound is all the test needs).
fn prost_len(m: &pb::Rollout) -> usize {
    [&m.obs, &m.actions, &m.log_probs, &m.values, &m.rewards, &m.terminated, &m.truncated, &m.final_obs, &m.next_obs]
        .iter()
        .map(|b| b.len())
        .sum()
}

/// Finite values no valid CartPole policy or env produces, one field at a time: INVALID_ARGUMENT naming the field,
/// counted as `out_of_range`. Returns how many were sent.
async fn extreme_values_case(actor: &mut GoodActor) -> usize {
    type Poison = fn(&mut Rollout);
    let cases: [(&str, &str, Poison); 16] = [
        ("log_probs", "log-prob -100", |r| r.log_probs[0] = -100.0),
        ("log_probs", "log-prob -1e4", |r| r.log_probs[1] = -1e4),
        ("log_probs", "log-prob +1e4", |r| r.log_probs[2] = 1e4),
        ("rewards", "reward 3e38", |r| r.rewards.iter_mut().for_each(|x| *x = 3e38)),
        ("rewards", "reward -1e30", |r| r.rewards[3] = -1e30),
        ("values", "value 1e30", |r| r.values[4] = 1e30),
        ("values", "value -3e38", |r| r.values[5] = -3e38),
        ("obs", "observation 1e30", |r| f32s(&mut r.obs)[6] = 1e30),
        ("obs", "observation -3e38", |r| f32s(&mut r.obs)[7] = -3e38),
        ("next_obs", "next observation 3e38", |r| f32s(&mut r.next_obs)[0] = 3e38),
        ("next_obs", "next observation -1e30", |r| f32s(&mut r.next_obs)[1] = -1e30),
        ("episodes", "episode return 1e300", |r| r.episodes[0].episode_return = 1e300),
        ("episodes", "episode return -3e38", |r| r.episodes[0].episode_return = -3e38),
        ("log_probs", "log-prob -f32::MAX", |r| r.log_probs[3] = -f32::MAX),
        ("rewards", "reward f32::MAX", |r| r.rewards[0] = f32::MAX),
        ("values", "value f32::MIN", |r| r.values[0] = f32::MIN),
    ];
    for (field, what, poison) in cases {
        let mut r = actor.bad_rollout();
        poison(&mut r);
        assert_rejected(actor, pb::Rollout::from(&r), Code::InvalidArgument, &[field, "outside"], what).await;
    }
    cases.len()
}

/// `actor_name` above `server.max_actor_name_bytes` (256): INVALID_ARGUMENT, counted as `bad_name`.
async fn long_name_case(server: &Server) {
    let mut c = client(server.addr, Some(TOKEN)).await;
    let request = pb::RegisterRequest { actor_name: "x".repeat(1000), ..register_request() };
    assert_status(c.register(request).await, Code::InvalidArgument, &["actor_name", "256"], "a 1000-byte actor name");
}

/// A Box observation space differing in one bound: the message names the bound and both values.
async fn box_bound_mismatch_case(server: &Server) {
    let mut c = client(server.addr, Some(TOKEN)).await;
    let env = common::env::make(ENV).expect("CartPole exists");
    let common::env::Space::Box { low, mut high, .. } = env.observation_space() else { panic!("Box observations") };
    high[2] = 0.5;
    let obs = common::env::Space::vector(low, high);
    let request = pb::RegisterRequest { observation_space: Some((&obs).into()), ..register_request() };
    let what = "a Box bound that differs";
    assert_status(c.register(request).await, Code::FailedPrecondition, &["high[2]", "0.5", "0.41887"], what);
}

/// Raw bytes as a gRPC request, to send what no generated client can: garbage and truncated messages.
#[derive(Debug, Clone, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = bytes::Bytes;
    type Decode = bytes::Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = bytes::Bytes;
    type Error = Status;

    fn encode(&mut self, item: bytes::Bytes, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = bytes::Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<bytes::Bytes>, Status> {
        let n = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, n)))
    }
}

/// Sends `body` to `/ppo.v1.Learner/<method>` with the token.
async fn raw_call(addr: SocketAddr, method: &str, body: Vec<u8>) -> Result<bytes::Bytes, Status> {
    let mut grpc = tonic::client::Grpc::new(channel(addr).await);
    grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
    let mut request = tonic::Request::new(bytes::Bytes::from(body));
    let token: MetadataValue<Ascii> = format!("Bearer {TOKEN}").parse().expect("metadata");
    request.metadata_mut().insert("authorization", token);
    let path = http::uri::PathAndQuery::from_maybe_shared(format!("/ppo.v1.Learner/{method}")).expect("path");
    grpc.unary(request, path, RawCodec).await.map(|r| r.into_inner())
}

/// Bytes that do not decode as the request message: INVALID_ARGUMENT saying so, counted as `malformed`. Returns
/// how many were sent.
async fn malformed_case(server: &Server, actor: &mut GoodActor) -> usize {
    let valid = prost::Message::encode_to_vec(&pb::Rollout::from(&actor.bad_rollout()));
    let register = prost::Message::encode_to_vec(&register_request());
    let bodies: [(&str, &str, Vec<u8>); 4] = [
        ("SubmitRollout", "garbage rollout", vec![0xff; 64]),
        ("SubmitRollout", "truncated rollout", valid[..valid.len() / 2].to_vec()),
        ("Register", "garbage registration", vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]),
        ("Register", "truncated registration", register[..register.len() - 3].to_vec()),
    ];
    for (method, what, body) in &bodies {
        let r = raw_call(server.addr, method, body.clone()).await;
        let status = assert_status(r, Code::InvalidArgument, &["could not be decoded"], what);
        assert_eq!(common::wire::rejection_reason(&status), Some(common::metrics::reason::MALFORMED), "{what}");
    }
    bodies.len()
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

/// An actor that leaves the env count to the learner (`learner_num_envs`) is told the config's count whatever its
/// `num_envs` says (8, for learners from before the flag); without the flag its own count is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_learner_names_the_env_count_when_asked() {
    bounded(async {
        let server = Server::start(&[]).await;
        let mut c = client(server.addr, Some(TOKEN)).await;
        let asked = pb::RegisterRequest { num_envs: 8, learner_num_envs: true, ..register_request() };
        let reg = c.register(asked).await.expect("registered").into_inner();
        assert_eq!(reg.num_envs, NUM_ENVS as u32, "the flag asks for the config's actors.num_envs");
        let own = pb::RegisterRequest { num_envs: 8, ..register_request() };
        assert_eq!(c.register(own).await.expect("registered").into_inner().num_envs, 8, "a count of its own is kept");
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

/// Extreme finite values in every numeric field of a rollout are rejected and counted; the learner trains on the
/// next valid rollout.
#[test]
fn extreme_finite_values_are_out_of_range() {
    with_own_counts(|counts| async move {
        let server = Server::start(&[]).await;
        let mut actor = GoodActor::connect(server.addr).await;
        let sent = extreme_values_case(&mut actor).await;
        let counted = counts.rejected(common::metrics::reason::OUT_OF_RANGE);
        assert_eq!(counted, sent as f64, "{sent} out-of-range rollouts, {counted} counted");
        actor.check_accepted_and_trained(&server.run_dir).await;
        server.stop().await;
    });
}

/// Defence in depth: with every value bound opened wide, the same extreme rollouts are accepted and trained on
/// (one update each), yet every published policy is finite (the actor-side decoder refuses non-finite weights)
/// and a well-behaved actor still advances the policy version afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_values_within_opened_bounds_never_poison_the_policy() {
    bounded(async {
        let wide = [
            "server.max_abs_reward=3.4e38",
            "server.max_abs_observation=3.4e38",
            "server.max_abs_value=3.4e38",
            "server.max_abs_log_prob_per_dim=3.4e38",
        ];
        let server = Server::start(&wide).await;
        let mut actor = GoodActor::connect(server.addr).await;
        type Poison = fn(&mut Rollout);
        let cases: [(&str, Poison); 10] = [
            ("log-probs -100", |r| r.log_probs.iter_mut().for_each(|x| *x = -100.0)),
            ("log-probs -1e4", |r| r.log_probs.iter_mut().for_each(|x| *x = -1e4)),
            ("log-probs -3e38", |r| r.log_probs.iter_mut().for_each(|x| *x = -3e38)),
            ("rewards 3e38", |r| r.rewards.iter_mut().for_each(|x| *x = 3e38)),
            ("rewards -1e30", |r| r.rewards.iter_mut().for_each(|x| *x = -1e30)),
            ("values 3e38", |r| r.values.iter_mut().for_each(|x| *x = 3e38)),
            ("values -1e30", |r| r.values.iter_mut().for_each(|x| *x = -1e30)),
            ("obs 1e30", |r| f32s(&mut r.obs).iter_mut().for_each(|x| *x = 1e30)),
            ("next and final obs -3e38", |r| {
                f32s(&mut r.next_obs).iter_mut().chain(f32s(&mut r.final_obs)).for_each(|x| *x = -3e38)
            }),
            ("denormals", |r| f32s(&mut r.obs).iter_mut().chain(&mut r.rewards).for_each(|x| *x = 1e-42)),
        ];
        let mut version = 0;
        for (what, poison) in cases {
            let mut r = actor.quiet_rollout();
            r.policy_version = PolicyVersion(version);
            poison(&mut r);
            let resp = actor.client.submit_rollout(pb::Rollout::from(&r)).await;
            let resp = resp.unwrap_or_else(|s| panic!("{what}: within the opened bounds yet rejected: {s:?}"));
            assert_eq!(resp.into_inner().outcome(), pb::RolloutOutcome::Accepted, "{what}");
            version = actor.next_policy(version + 1, what).await;
        }
        // A well-behaved actor still advances the version.
        let mut honest = GoodActor::connect(server.addr).await;
        let r = honest.rollout(GOOD_RETURN);
        let resp = honest.client.submit_rollout(pb::Rollout::from(&r)).await.expect("an honest rollout is taken");
        assert_eq!(resp.into_inner().outcome(), pb::RolloutOutcome::Accepted);
        honest.next_policy(version + 1, "after the extreme rollouts").await;
        server.stop().await;
    })
    .await;
}

/// Episode records are held to the rewards and done flags the learner receives: a return or length that does
/// not add up is INVALID_ARGUMENT naming `episodes`, so an actor cannot end a run or falsify its curve by
/// reporting made-up returns; honest rollouts before and after are taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn episode_records_must_add_up() {
    bounded(async {
        let server = Server::start(&[]).await;
        let mut actor = GoodActor::connect(server.addr).await;
        let (mut forged, mut honest) = (0, 0);
        // Envs whose current episode began inside a rollout the learner took: their next record is checked exactly.
        let mut known = std::collections::HashSet::new();
        let mut version = 0;
        for i in 0..40 {
            let mut r = actor.sampler.collect(&mut actor.policy).expect("collect");
            r.actor_id = ActorId(actor.id);
            // Once in a while, inflate the return (or stretch the length) of a record whose start was seen.
            let target = r.episodes.iter().position(|ep| known.contains(&ep.env_index));
            if let (true, Some(k)) = (i % 4 == 3, target) {
                let ep = &mut r.episodes[k];
                if forged % 2 == 0 {
                    ep.episode_return += 1.0
                } else {
                    ep.length += 1
                }
                let what = format!("forged record {:?}", r.episodes[k]);
                assert_rejected(&mut actor, pb::Rollout::from(&r), Code::InvalidArgument, &["episodes"], &what).await;
                // The learner forgot what it carried: every env starts unknown again.
                known.clear();
                forged += 1;
            } else {
                let resp = actor.client.submit_rollout(pb::Rollout::from(&r)).await;
                let resp = resp
                    .unwrap_or_else(|s| panic!("honest rollout {i} ({} episodes) refused: {s:?}", r.episodes.len()));
                assert_eq!(resp.into_inner().outcome(), pb::RolloutOutcome::Accepted, "honest rollout {i}");
                // Each rollout is an update: act with the new policy, so that the next one is not stale.
                version = actor.next_policy(version + 1, "after an honest rollout").await;
                known.extend(r.episodes.iter().map(|ep| ep.env_index));
                honest += 1;
            }
        }
        assert!(forged >= 3 && honest >= 20, "{forged} forged, {honest} honest");
        server.stop().await;
    })
    .await;
}

/// Records whose episode began before the learner saw this actor may include unseen steps, so they cannot be
/// checked: they are accepted but not counted. An actor that ends every env at once with a made-up return of 500
/// over 500 (unseen) steps neither moves the mean return nor the episode count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unverifiable_returns_are_not_counted() {
    bounded(async {
        let server = Server::start(&[]).await;
        let mut actor = GoodActor::connect(server.addr).await;
        let mut r = actor.quiet_rollout();
        r.terminated[..NUM_ENVS].fill(true);
        r.episodes = (0..NUM_ENVS).map(|e| EpisodeStats { env_index: e, episode_return: 500.0, length: 500 }).collect();
        let resp = actor.client.submit_rollout(pb::Rollout::from(&r)).await.expect("accepted, not counted");
        assert_eq!(resp.into_inner().outcome(), pb::RolloutOutcome::Accepted);
        actor.next_policy(1, "the update on the rollout").await;
        let deadline = std::time::Instant::now() + WAIT;
        let rows = loop {
            let rows = tests::read_progress(&server.run_dir);
            if !rows.is_empty() || std::time::Instant::now() > deadline {
                break rows;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let first = rows.first().expect("a progress row");
        assert_eq!((first.episodes, first.mean_return), (0, None), "{rows:?}");
        server.stop().await;
    })
    .await;
}

/// Bytes that do not decode are INVALID_ARGUMENT (not INTERNAL), counted as `malformed`; the learner serves on.
#[test]
fn undecodable_bytes_are_invalid_argument() {
    with_own_counts(|counts| async move {
        let server = Server::start(&[]).await;
        let mut actor = GoodActor::connect(server.addr).await;
        let sent = malformed_case(&server, &mut actor).await;
        let counted = counts.rejected(common::metrics::reason::MALFORMED);
        assert_eq!(counted, sent as f64, "{sent} malformed requests, {counted} counted");
        actor.check_accepted_and_trained(&server.run_dir).await;
        server.stop().await;
    });
}

/// The registry is bounded: names above the limit are refused, at most `server.max_actors` actors are held
/// (RESOURCE_EXHAUSTED beyond), and an actor with neither a policy stream nor a submission for
/// `server.actor_idle_seconds` is forgotten, freeing its place; one with an open stream stays.
#[test]
fn registry_is_bounded_and_forgets_idle_actors() {
    with_own_counts(|counts| async move {
        // Forgotten after 5 s idle: the third registration below comes well within that, also on a loaded machine.
        let server = Server::start(&["server.max_actors=2", "server.actor_idle_seconds=5"]).await;
        long_name_case(&server).await;
        // One actor with an open stream, one without: the registry is full.
        let mut streaming = GoodActor::connect(server.addr).await;
        let mut c = client(server.addr, Some(TOKEN)).await;
        let idle = c.register(register_request()).await.expect("second actor registers").into_inner();
        let r = c.register(register_request()).await;
        assert_status(r, Code::ResourceExhausted, &["server.max_actors"], "a third actor");
        // The actor without a stream is forgotten after the idle time (registering succeeds again, waited for with
        // a deadline); the streaming one is kept.
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut refused = 1;
        while c.register(register_request()).await.is_err() {
            refused += 1;
            assert!(tokio::time::Instant::now() < deadline, "the idle actor was never forgotten");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut r = streaming.bad_rollout();
        r.actor_id = ActorId(idle.actor_id);
        assert_rejected(&mut streaming, pb::Rollout::from(&r), Code::InvalidArgument, &["actor_id"], "forgotten").await;
        let counted = (
            counts.rejected(common::metrics::reason::BAD_NAME),
            counts.rejected(common::metrics::reason::TOO_MANY_ACTORS),
        );
        assert_eq!(counted, (1.0, refused as f64), "one long name, {refused} refusals of a full registry");
        streaming.check_accepted_and_trained(&server.run_dir).await;
        server.stop().await;
    });
}

/// A rollout produced under another learner incarnation (a restarted learner that may have resumed from an
/// older checkpoint) is dropped quietly as STALE, whatever its version; the same version under this incarnation
/// is a future version and rejected.
#[test]
fn rollouts_of_an_earlier_learner_are_stale_not_rejected() {
    with_own_counts(|counts| async move {
        let server = Server::start(&[]).await;
        let mut actor = GoodActor::connect(server.addr).await;
        assert_ne!(actor.incarnation, 0, "the learner announces its incarnation");
        let mut r = actor.bad_rollout();
        (r.policy_version, r.incarnation) = (PolicyVersion(1_000), actor.incarnation.wrapping_add(1).max(1));
        let resp = actor.client.submit_rollout(pb::Rollout::from(&r)).await.expect("quietly dropped, not rejected");
        assert_eq!(resp.into_inner().outcome(), pb::RolloutOutcome::Stale);
        // Also from an actor id this learner never handed out (the earlier learner did).
        r.actor_id.0 += 1_000_000;
        let resp = actor.client.submit_rollout(pb::Rollout::from(&r)).await.expect("quietly dropped, not rejected");
        assert_eq!(resp.into_inner().outcome(), pb::RolloutOutcome::Stale);
        assert_eq!(counts.rejected(common::metrics::reason::FUTURE_VERSION), 0.0, "not counted as misbehaviour");
        let mut r = actor.bad_rollout();
        (r.policy_version, r.incarnation) = (PolicyVersion(1_000), actor.incarnation);
        let what = "a future version of this incarnation";
        assert_rejected(&mut actor, pb::Rollout::from(&r), Code::InvalidArgument, &["policy_version"], what).await;
        assert_eq!(counts.rejected(common::metrics::reason::FUTURE_VERSION), 1.0, "the future version is counted");
        actor.check_accepted_and_trained(&server.run_dir).await;
        server.stop().await;
    });
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
        extreme_values_case(&mut actor).await;
        malformed_case(&server, &mut actor).await;
        long_name_case(&server).await;
        box_bound_mismatch_case(&server).await;
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

/// The float observations of a CartPole rollout, to poison.
fn f32s(obs: &mut common::obs::ObsBuf) -> &mut Vec<f32> {
    match obs {
        common::obs::ObsBuf::F32(xs) => xs,
        common::obs::ObsBuf::U8(_) => panic!("CartPole observations are float32"),
    }
}

/// A recurrent model's rollouts carry each env's state before the first step: a rollout without it, with one env's
/// state missing, with a hidden state outside [-1, 1] or a non-finite cell state is INVALID_ARGUMENT naming
/// `initial_state`; a rollout of another length than `actors.rollout_steps` is FAILED_PRECONDITION (sequences have
/// one length: every rollout of that actor would fail, so it stops). A valid one (the actor's sampler carried a
/// real LSTM state) is then accepted and trained on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recurrent_model_needs_valid_initial_states() {
    bounded(async {
        let lstm = ["model.shared_trunk=true", "model.core=\"lstm\"", "model.core_size=8", "model.hidden_sizes=[16]"];
        let server = Server::start(&lstm).await;
        let mut actor = GoodActor::connect(server.addr).await;
        assert_eq!(actor.policy.state_dim(), 16, "the actor runs the published LSTM");
        let r = actor.bad_rollout();
        assert_eq!(r.initial_state.len(), NUM_ENVS * 16);
        type Breakage = fn(&mut Rollout);
        let breakages: [(&str, Breakage); 4] = [
            ("no state", |r| r.initial_state.clear()),
            ("one env's state", |r| r.initial_state.truncate(16)),
            ("hidden state 1.5", |r| r.initial_state[3] = 1.5),
            ("NaN cell state", |r| r.initial_state[12] = f32::NAN),
        ];
        for (what, breakage) in breakages {
            let mut bad = r.clone();
            breakage(&mut bad);
            assert_rejected(&mut actor, pb::Rollout::from(&bad), Code::InvalidArgument, &["initial_state"], what).await;
        }
        let keep = NUM_ENVS * (ROLLOUT_STEPS - 1);
        let mut short = r.clone();
        short.num_steps -= 1;
        for xs in [&mut short.actions, &mut short.log_probs, &mut short.values, &mut short.rewards] {
            xs.truncate(keep);
        }
        short.terminated.truncate(keep);
        short.truncated.truncate(keep);
        f32s(&mut short.obs).truncate(keep * 4);
        short.episodes.clear();
        let msg = "a shorter sequence";
        let code = Code::FailedPrecondition;
        assert_rejected(&mut actor, pb::Rollout::from(&short), code, &["actors.rollout_steps"], msg).await;
        actor.check_accepted_and_trained(&server.run_dir).await;
        server.stop().await;
    })
    .await;
}
