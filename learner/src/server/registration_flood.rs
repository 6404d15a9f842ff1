//! A registration flood against the learner's gRPC service on loopback, as a hostile client holding the token would
//! send it, then honest actors that must get in, follow the policy stream and have a rollout accepted for training.
//! Clients bind distinct loopback addresses (127.0.0.x) to stand for distinct peers. Each test counts into a
//! recorder of its own (a thread-local one, on the test's current-thread runtime, which also runs the server), so
//! the counts are exact.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::auth::TokenAuth;
use super::handlers::{LearnerService, RunInfo, Spec};
use crate::config::TrainConfig;
use crate::queue::{QueueReceiver, rollout_queue};
use crate::test_support;
use crate::update::trainer::Trainer;
use common::ids::ActorId;
use common::metrics::{self as m, evicted, reason};
use common::policy_cell::PolicyCell;
use common::wire::{PROTOCOL_VERSION, pb};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

/// What every client presents under `authorization`.
const BEARER: &str = "Bearer flood-test-token";
const MAX_ACTORS: usize = 8;
/// Bound on a whole test.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on one call.
const WAIT: Duration = Duration::from_secs(10);

/// The flooding client's address.
const FLOODER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
/// An honest actor's address.
const HONEST: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// Awaits `f` for at most [`WAIT`].
async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f).await.expect("call timed out")
}

/// Adds the bearer token to every call.
fn bearer(mut req: Request<()>) -> Result<Request<()>, Status> {
    req.metadata_mut().insert("authorization", tonic::metadata::MetadataValue::from_static(BEARER));
    Ok(req)
}

type Client =
    pb::learner_client::LearnerClient<InterceptedService<Channel, fn(Request<()>) -> Result<Request<()>, Status>>>;

/// A learner service (a CartPole learner taking rollouts of 2 envs x 16 steps) served on 127.0.0.1.
struct Learner {
    addr: SocketAddr,
    cfg: TrainConfig,
    trainer: Trainer,
    service: Arc<LearnerService>,
    rollouts: QueueReceiver,
    stop: CancellationToken,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Learner {
    /// Serves with `overrides` of the config, at most [`MAX_ACTORS`] actors.
    async fn start(overrides: &[&str]) -> Self {
        let mut keys = vec![
            "actors.num_envs=2".to_string(),
            "actors.rollout_steps=16".into(),
            "ppo.minibatch_size=32".into(),
            format!("server.max_actors={MAX_ACTORS}"),
        ];
        keys.extend(overrides.iter().map(|k| k.to_string()));
        let cfg = TrainConfig::load(None, &keys).unwrap();
        let trainer = Trainer::new(&cfg).unwrap();
        let (observation_space, action_space) = cfg.env.spaces().unwrap();
        let policies = Arc::new(PolicyCell::new(trainer.snapshot().unwrap()));
        let run = RunInfo::of(&cfg, "flood".into());
        let (tx, rollouts) = rollout_queue(cfg.server.queue_capacity);
        let stop = CancellationToken::new();
        let spec = Spec { observation_space, action_space, policies };
        let service = Arc::new(LearnerService::new(run, spec, tx, stop.clone()));
        let learner = InterceptedService::new(
            pb::learner_server::LearnerServer::from_arc(service.clone()),
            TokenAuth::new(BEARER.strip_prefix("Bearer ").map(String::from)),
        );
        let listener = tokio::net::TcpListener::bind((FLOODER, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server =
            tokio::spawn(tonic::transport::Server::builder().add_service(learner).serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                stop.clone().cancelled_owned(),
            ));
        Self { addr, cfg, trainer, service, rollouts, stop, server }
    }

    /// A client connecting from `from` (a loopback address).
    async fn client(&self, from: IpAddr) -> Client {
        let endpoint = Endpoint::from_shared(format!("http://{}", self.addr)).unwrap().local_address(Some(from));
        let channel = within(endpoint.connect()).await.unwrap();
        pb::learner_client::LearnerClient::with_interceptor(channel, bearer as fn(_) -> _)
    }

    /// A registration that matches the learner.
    fn request(&self, name: &str) -> pb::RegisterRequest {
        let (observation_space, action_space) = self.cfg.env.spaces().unwrap();
        pb::RegisterRequest {
            actor_name: name.into(),
            env_id: self.cfg.env.id.clone(),
            observation_space: Some((&observation_space).into()),
            action_space: Some((&action_space).into()),
            num_envs: self.cfg.actors.num_envs as u32,
            protocol_version: PROTOCOL_VERSION as i32,
            learner_num_envs: false,
        }
    }

    /// What an honest actor does once registered: opens the policy stream, reads the first policy, and submits a
    /// rollout of it, which must be accepted and queued for the trainer. Returns the stream, which keeps it
    /// connected.
    async fn follow_and_submit(
        &self,
        client: &mut Client,
        reg: &pb::RegisterResponse,
    ) -> tonic::Streaming<pb::PolicyUpdate> {
        let request = pb::SubscribePolicyRequest { actor_id: reg.actor_id };
        let mut stream = within(client.subscribe_policy(request)).await.expect("the policy stream opens").into_inner();
        let first = within(stream.message()).await.unwrap().expect("a first policy");
        assert_eq!(first.version, reg.policy_version);
        let mut rollout = test_support::collect(&self.trainer, &mut test_support::sampler(&self.cfg, reg.seed));
        (rollout.actor_id, rollout.incarnation) = (ActorId(reg.actor_id), reg.incarnation);
        let answer = within(client.submit_rollout(pb::Rollout::from(&rollout))).await.expect("the rollout is taken");
        assert_eq!(answer.into_inner().outcome(), pb::RolloutOutcome::Accepted);
        let queued = self.rollouts.try_recv().expect("the accepted rollout is queued for the trainer");
        assert_eq!((queued.actor_id, queued.len()), (ActorId(reg.actor_id), rollout.len()));
        stream
    }

    /// The registered actors named `name`, and how many of them have an open policy stream.
    fn registered(&self, name: &str) -> (usize, usize) {
        let rows = crate::dashboard::ActorSource::actors(&*self.service);
        let named: Vec<_> = rows.iter().filter(|r| r.name == name).collect();
        (named.len(), named.iter().filter(|r| r.streams > 0).count())
    }

    async fn stop(self) {
        self.stop.cancel();
        within(self.server).await.unwrap().unwrap();
    }
}

/// A recorder of this test's own, and its counters.
struct Counts(metrics_exporter_prometheus::PrometheusRecorder);

impl Counts {
    fn new() -> Self {
        Self(PrometheusBuilder::new().build_recorder())
    }

    fn handle(&self) -> PrometheusHandle {
        self.0.handle()
    }

    /// Counter `name` with label `reason` (0 before it was first counted).
    fn of(handle: &PrometheusHandle, name: &str, reason: &str) -> f64 {
        let prefix = format!("{name}{{reason=\"{reason}\"}} ");
        let text = handle.render();
        text.lines().find_map(|l| l.strip_prefix(prefix.as_str())).map_or(0.0, |v| v.trim().parse().unwrap())
    }
}

/// The flood, scaled to a registry of 8: one client registers 500 times in a burst, from one address
/// (holding at most 4 never-active registrations: the rest are evicted as they come). Honest actors then register
/// at once, from another address and from the flooder's own, follow the policy stream and get a rollout accepted;
/// every eviction is counted, and nobody was refused.
#[tokio::test]
async fn a_flood_from_one_client_does_not_lock_out_honest_actors() {
    const FLOOD: usize = 500;
    const PER_PEER: usize = 4;
    let counts = Counts::new();
    let _local = metrics::set_default_local_recorder(&counts.0);
    let handle = counts.handle();
    let test = async {
        let learner = Learner::start(&[&format!("server.max_idle_registrations_per_peer={PER_PEER}")]).await;
        let mut flood = learner.client(FLOODER).await;
        let mut flood_refused = 0;
        for _ in 0..FLOOD {
            if let Err(s) = within(flood.register(learner.request("flood"))).await {
                assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
                flood_refused += 1;
            }
        }

        let mut honest = learner.client(HONEST).await;
        let reg = within(honest.register(learner.request("honest"))).await;
        let reg = reg.unwrap_or_else(|s| panic!("the honest actor is locked out after the flood: {s:?}")).into_inner();
        let _stream = learner.follow_and_submit(&mut honest, &reg).await;
        // An honest actor sharing the flooder's address (its host, a NAT) gets in as well.
        let mut neighbour = learner.client(FLOODER).await;
        let reg = within(neighbour.register(learner.request("neighbour"))).await.expect("registers").into_inner();
        let _neighbour_stream = learner.follow_and_submit(&mut neighbour, &reg).await;
        assert_eq!((learner.registered("honest"), learner.registered("neighbour")), ((1, 1), (1, 1)));
        assert_eq!(learner.registered("flood"), (PER_PEER - 1, 0), "the flood holds its cap, less the neighbour");
        assert_eq!(flood_refused, 0, "the flood's registrations replaced one another, none was refused");

        let evicted = Counts::of(&handle, m::EVICTED_REGISTRATIONS, evicted::PEER_LIMIT);
        assert_eq!(evicted, (FLOOD - PER_PEER + 1) as f64, "every registration above the cap evicted one");
        assert_eq!(Counts::of(&handle, m::EVICTED_REGISTRATIONS, evicted::REGISTRY_FULL), 0.0);
        assert_eq!(Counts::of(&handle, m::REJECTED, reason::TOO_MANY_ACTORS), 0.0, "nobody was refused");
        learner.stop().await;
    };
    tokio::time::timeout(TEST_TIMEOUT, test).await.expect("test timed out");
}

/// A flood spread over 8 addresses fills the registry with registrations younger than the grace: a newcomer is
/// refused (RESOURCE_EXHAUSTED, `too_many_actors`) until the oldest is past the grace, then makes room from it,
/// trains, and the eviction and the refusals are counted.
#[tokio::test]
async fn a_flood_from_many_addresses_gives_way_after_the_grace() {
    const GRACE: Duration = Duration::from_secs(2);
    let counts = Counts::new();
    let _local = metrics::set_default_local_recorder(&counts.0);
    let handle = counts.handle();
    let test = async {
        let learner = Learner::start(&[&format!("server.registration_grace_seconds={}", GRACE.as_secs_f64())]).await;
        let flood_started = Instant::now();
        for peer in 0..MAX_ACTORS as u8 {
            let mut flood = learner.client(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10 + peer))).await;
            within(flood.register(learner.request("flood"))).await.expect("room for the flood");
        }
        assert_eq!(learner.registered("flood"), (MAX_ACTORS, 0));

        // A real actor retries with backoff; so does this one, until the deadline.
        let mut honest = learner.client(HONEST).await;
        let deadline = Instant::now() + GRACE * 10;
        let mut refused = 0;
        let reg = loop {
            match within(honest.register(learner.request("honest"))).await {
                Ok(reg) => break reg.into_inner(),
                Err(s) => {
                    assert_eq!(
                        (s.code(), common::wire::rejection_reason(&s)),
                        (Code::ResourceExhausted, Some("too_many_actors"))
                    );
                    refused += 1;
                }
            }
            assert!(Instant::now() < deadline, "still refused after {refused} tries");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        // Admitted only once the oldest flood registration was past the grace (it was sent after `flood_started`).
        assert!(flood_started.elapsed() >= GRACE, "admitted {:?} after the flood began", flood_started.elapsed());
        println!("refused {refused} times, admitted {:?} after the flood began", flood_started.elapsed());
        let _stream = learner.follow_and_submit(&mut honest, &reg).await;
        assert_eq!((learner.registered("flood"), learner.registered("honest")), ((MAX_ACTORS - 1, 0), (1, 1)));

        assert_eq!(Counts::of(&handle, m::EVICTED_REGISTRATIONS, evicted::REGISTRY_FULL), 1.0);
        assert_eq!(Counts::of(&handle, m::EVICTED_REGISTRATIONS, evicted::PEER_LIMIT), 0.0);
        assert_eq!(Counts::of(&handle, m::REJECTED, reason::TOO_MANY_ACTORS), refused as f64);
        learner.stop().await;
    };
    tokio::time::timeout(TEST_TIMEOUT, test).await.expect("test timed out");
}
