//! The gRPC handlers: authenticate (interceptor), validate, convert, hand off. No tensor math here; the actor
//! registry they keep is in `registry.rs`.

use super::registry::{ActorEntry, Peer, SharedRegistry};
use crate::config::{RegistryLimits, TrainConfig};
use crate::error::Error;
use crate::queue::QueueSender;
use common::env::Space;
use common::ids::PolicyVersion;
use common::metrics as m;
use common::policy_cell::PolicyCell;
use common::rollout::{Bounds, EpisodeTracker, Rollout};
use common::wire::{PROTOCOL_VERSION, pb};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// Counts a rejected request under its reason.
pub fn count_rejection(e: &Error) {
    if let Some(reason) = e.rejection_reason() {
        metrics::counter!(m::REJECTED, "reason" => reason).increment(1);
    }
}

/// What the learner tells registering actors and checks their rollouts against.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// Gymnasium id.
    pub env_id: String,
    /// Model hidden sizes.
    pub hidden_sizes: Vec<usize>,
    /// Steps per env per rollout the learner asks for.
    pub rollout_steps: usize,
    /// Envs per actor the learner's config expects (`actors.num_envs`): what an actor that asks for 0 steps.
    pub num_envs: usize,
    /// The largest message the server accepts (`server.max_message_bytes`), told to actors at registration.
    pub max_message_bytes: usize,
    /// Root seed (actor seeds derive from it).
    pub root_seed: u64,
    /// Run id.
    pub run_id: String,
    /// Rollouts more than this many versions old are dropped.
    pub max_policy_lag: u64,
    /// Magnitude bounds of rollout values.
    pub bounds: Bounds,
    /// Bounds of the actor registry.
    pub registry: RegistryLimits,
    /// The model's recurrent state, which every rollout carries.
    pub state: common::model::StateLayout,
}

impl RunInfo {
    /// What `cfg` tells registering actors, for the run `run_id`.
    pub fn of(cfg: &TrainConfig, run_id: String) -> Self {
        Self {
            env_id: cfg.env.id.clone(),
            hidden_sizes: cfg.model.hidden_sizes.clone(),
            rollout_steps: cfg.actors.rollout_steps,
            num_envs: cfg.actors.num_envs,
            max_message_bytes: cfg.server.max_message_bytes,
            root_seed: cfg.seed,
            run_id,
            max_policy_lag: cfg.ppo.max_policy_lag,
            bounds: cfg.server.bounds(),
            registry: cfg.server.registry_limits(),
            state: common::model::StateLayout::of(
                common::model::Core::of(cfg.model.core, cfg.model.core_size),
                cfg.model.shared_trunk,
            ),
        }
    }
}

/// The env's spaces and the policies trained for it: known when the learner starts, or once the first actor has
/// registered (`env.spaces_from_first_actor`).
#[derive(Clone)]
pub struct Spec {
    /// Observation space.
    pub observation_space: Space,
    /// Action space.
    pub action_space: Space,
    /// The newest policy, which the policy streams follow.
    pub policies: Arc<PolicyCell>,
}

/// Asks the trainer thread to start training on an actor's spaces; the answer is the policy cell, or why the
/// spaces cannot be trained on.
pub struct Adoption {
    /// The actor's observation space.
    pub observation_space: Space,
    /// The actor's action space.
    pub action_space: Space,
    /// Where the answer goes.
    pub reply: tokio::sync::oneshot::Sender<Result<Arc<PolicyCell>, String>>,
}

/// Shared state of the service.
pub struct LearnerService {
    run: RunInfo,
    incarnation: u64,
    registry: SharedRegistry,
    next_actor_id: AtomicU64,
    spec: tokio::sync::OnceCell<Spec>,
    /// Set while the spaces are to come from the first actor that registers.
    adopt: Option<crossbeam_channel::Sender<Adoption>>,
    rollouts: QueueSender,
    shutdown: CancellationToken,
}

impl LearnerService {
    /// A service for `spec`'s env, handing valid rollouts to `rollouts` and streaming its policies.
    pub fn new(run: RunInfo, spec: Spec, rollouts: QueueSender, shutdown: CancellationToken) -> Self {
        Self::with_spec(run, tokio::sync::OnceCell::new_with(Some(spec)), None, rollouts, shutdown)
    }

    /// A service that takes the env's spaces from the first actor that registers: it sends them through
    /// `adopt` to the trainer thread, which answers with the policy cell (or why not, and the actor is refused).
    pub fn adopting(
        run: RunInfo,
        adopt: crossbeam_channel::Sender<Adoption>,
        rollouts: QueueSender,
        shutdown: CancellationToken,
    ) -> Self {
        Self::with_spec(run, tokio::sync::OnceCell::new(), Some(adopt), rollouts, shutdown)
    }

    fn with_spec(
        run: RunInfo,
        spec: tokio::sync::OnceCell<Spec>,
        adopt: Option<crossbeam_channel::Sender<Adoption>>,
        rollouts: QueueSender,
        shutdown: CancellationToken,
    ) -> Self {
        // Ids from an earlier learner process must not collide with this one's: start above the current time.
        let base = (common::policy::unix_now() as u64) << 16;
        // Random, so that two processes of one run never share it; never 0 (0 means "unknown" on the wire).
        let incarnation = rand::random::<u64>().max(1);
        Self {
            registry: SharedRegistry::new(run.registry),
            run,
            incarnation,
            next_actor_id: AtomicU64::new(base),
            spec,
            adopt,
            rollouts,
            shutdown,
        }
    }

    /// This learner process's incarnation (see `RegisterResponse.incarnation`).
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Forgets actors idle for longer than `server.actor_idle_seconds`; the server calls it periodically.
    pub fn evict_idle_actors(&self) -> usize {
        self.registry.lock().evict_idle(Instant::now())
    }

    /// Checks the rollout's episode records against the actor's rewards and done flags (see [`EpisodeTracker`])
    /// and keeps only the records of episodes the learner saw whole: only those count towards the mean return and
    /// the target. `None` forgets the carried sums (after a rejected rollout).
    fn track_episodes(&self, id: u64, rollout: Option<&mut Rollout>) -> Result<(), Error> {
        // The check is O(T·N): take the tracker out of the registry so the lock is not held while it runs.
        let mut tracker = self.registry.lock().take_episodes(id).ok_or(Error::UnknownActor(id))?;
        let result = match rollout {
            Some(r) => tracker.check(r, self.run.bounds.max_abs_reward).map(|verified| {
                let mut seen_whole = verified.into_iter();
                r.episodes.retain(|_| seen_whole.next().unwrap_or(false));
            }),
            None => {
                tracker = EpisodeTracker::default();
                Ok(())
            }
        };
        self.registry.lock().put_episodes(id, tracker);
        Ok(result?)
    }

    /// Checks what does not depend on the spaces: name, protocol, env id and env count.
    fn check_register(&self, r: &pb::RegisterRequest) -> Result<(), Error> {
        let run = &self.run;
        if r.actor_name.len() > run.registry.max_name_bytes {
            return Err(Error::BadName(format!(
                "actor_name: {} bytes is longer than the learner's limit of {} (server.max_actor_name_bytes)",
                r.actor_name.len(),
                run.registry.max_name_bytes
            )));
        }
        if r.protocol_version != PROTOCOL_VERSION as i32 {
            return Err(Error::Mismatch(format!(
                "protocol version: actor speaks {}, learner speaks {}",
                r.protocol_version, PROTOCOL_VERSION as i32
            )));
        }
        if r.env_id != run.env_id {
            return Err(Error::Mismatch(format!("env id: actor runs {:?}, learner trains {:?}", r.env_id, run.env_id)));
        }
        if r.num_envs > 65_536 {
            return Err(Error::Mismatch(format!("num_envs: {} is outside 0..=65536", r.num_envs)));
        }
        Ok(())
    }

    /// The envs an actor steps: the config's `actors.num_envs` when the request leaves it to the learner
    /// (`learner_num_envs`, or a count of 0), else its own count. A count other than the config's is accepted (the
    /// actor's machine may be larger or smaller) with one line saying what its rollouts become; the update loop
    /// logs the batch that results.
    fn envs_for(&self, r: &pb::RegisterRequest) -> usize {
        let configured = self.run.num_envs;
        let asked = if r.learner_num_envs { 0 } else { r.num_envs as usize };
        if asked != 0 && asked != configured {
            tracing::warn!(
                actor = %r.actor_name,
                "the actor steps {asked} envs, the config's actors.num_envs is {configured}: its rollouts hold \
                 {asked} x {} = {} steps instead of {}; start it without --num-envs to take the config's",
                self.run.rollout_steps,
                asked * self.run.rollout_steps,
                configured * self.run.rollout_steps,
            );
        }
        if asked == 0 { configured } else { asked }
    }

    /// The actor's spaces, or why it sent none that can be read.
    fn actor_spaces(r: &pb::RegisterRequest) -> Result<(Space, Space), Error> {
        let read = |what: &str, space: &Option<pb::Space>| match space.as_ref().map(Space::try_from) {
            Some(Ok(s)) => Ok(s),
            Some(Err(e)) => Err(Error::Mismatch(format!("{what}: actor has {e}"))),
            None => Err(Error::Mismatch(format!("{what}: actor sent none"))),
        };
        Ok((read("observation space", &r.observation_space)?, read("action space", &r.action_space)?))
    }

    /// The run's spec; while it waits for the first actor's spaces, `r`'s are handed to the trainer thread (one
    /// registration at a time; a refused one leaves the spec open for the next actor).
    async fn spec_for(&self, r: &pb::RegisterRequest) -> Result<&Spec, Error> {
        if let Some(spec) = self.spec.get() {
            return Ok(spec);
        }
        let adopt = self.adopt.as_ref().ok_or_else(|| Error::Internal("the learner has no env spec".into()))?;
        self.spec
            .get_or_try_init(|| async {
                let (observation_space, action_space) = Self::actor_spaces(r)?;
                let (reply, answer) = tokio::sync::oneshot::channel();
                let request = Adoption {
                    observation_space: observation_space.clone(),
                    action_space: action_space.clone(),
                    reply,
                };
                let stopped = || Error::Unavailable("learner has stopped training".into());
                adopt.try_send(request).map_err(|_| stopped())?;
                let policies = tokio::select! {
                    a = answer => a.map_err(|_| stopped())?,
                    _ = self.shutdown.cancelled() => return Err(stopped()),
                }
                .map_err(|reason| Error::Mismatch(format!("the actor's spaces cannot be trained on: {reason}")))?;
                tracing::info!(
                    actor = %r.actor_name,
                    observation_space = %observation_space,
                    action_space = %action_space,
                    "env spaces taken from the first actor that registered (env.spaces_from_first_actor)"
                );
                Ok(Spec { observation_space, action_space, policies })
            })
            .await
    }

    /// Checks the actor's spaces against the run's, naming the first difference.
    fn check_spaces(r: &pb::RegisterRequest, spec: &Spec) -> Result<(), Error> {
        let spaces = [
            ("observation space", &r.observation_space, &spec.observation_space),
            ("action space", &r.action_space, &spec.action_space),
        ];
        for (what, theirs, ours) in spaces {
            let difference = match theirs.as_ref().map(Space::try_from) {
                Some(Ok(s)) => ours.difference(&s),
                Some(Err(e)) => Some(format!("actor has {e}, learner has {}", ours.describe())),
                None => Some(format!("actor has none, learner has {}", ours.describe())),
            };
            if let Some(d) = difference {
                return Err(Error::Mismatch(format!("{what}: {d}")));
            }
        }
        Ok(())
    }

    /// The newest policy version, 0 before the spec is known.
    fn current_version(&self) -> u64 {
        self.spec.get().map_or(0, |s| s.policies.latest().version)
    }

    fn check_rollout(&self, msg: &pb::Rollout) -> Result<Rollout, Error> {
        let touched = self.registry.lock().touch(msg.actor_id, Instant::now());
        let (name, num_envs) = touched.ok_or(Error::UnknownActor(msg.actor_id))?;
        let spec = self.spec.get().ok_or(Error::UnknownActor(msg.actor_id))?;
        let mut rollout = common::wire::rollout(msg, spec.observation_space.dtype())?;
        if rollout.num_envs != num_envs {
            return Err(Error::Rollout(common::rollout::RolloutError {
                field: "num_envs",
                reason: format!("{} differs from the {num_envs} envs registered by {name}", rollout.num_envs),
                kind: common::rollout::RolloutErrorKind::Shape,
            }));
        }
        rollout.validate(&spec.observation_space, &spec.action_space, &self.run.bounds)?;
        rollout.validate_state(&self.run.state)?;
        // A recurrent model trains on sequences of one length (minibatches of whole sequences).
        // Every rollout of this actor would fail the same way: a precondition, so the actor stops and says why.
        if self.run.state.is_recurrent() && rollout.num_steps != self.run.rollout_steps {
            return Err(Error::Mismatch(format!(
                "rollouts of {} steps; this learner trains a recurrent model on sequences of actors.rollout_steps = \
                 {} steps: start the actor without --rollout-steps",
                rollout.num_steps, self.run.rollout_steps
            )));
        }
        let current = spec.policies.latest().version;
        if rollout.policy_version > PolicyVersion(current) {
            return Err(Error::FutureVersion { got: rollout.policy_version.0, current });
        }
        self.track_episodes(msg.actor_id, Some(&mut rollout))?;
        Ok(rollout)
    }

    /// Queues a rollout for the trainer, waiting asynchronously while the bounded queue is full (backpressure on
    /// the sender that holds no thread, see [`crate::queue`]). Shutdown ends the wait.
    async fn hand_off(&self, rollout: Rollout) -> Result<(), Error> {
        tokio::select! {
            sent = self.rollouts.send(rollout) => {
                sent.map_err(|_| Error::Unavailable("learner has stopped training".into()))
            }
            _ = self.shutdown.cancelled() => Err(Error::Unavailable("learner is shutting down".into())),
        }
    }
}

impl crate::dashboard::ActorSource for LearnerService {
    fn actors(&self) -> Vec<crate::dashboard::ActorRow> {
        self.registry.lock().rows()
    }
}

type PolicyStream = Pin<Box<dyn Stream<Item = Result<pb::PolicyUpdate, Status>> + Send>>;

#[tonic::async_trait]
impl pb::learner_server::Learner for LearnerService {
    async fn register(&self, request: Request<pb::RegisterRequest>) -> Result<Response<pb::RegisterResponse>, Status> {
        let remote = request.remote_addr();
        let r = request.into_inner();
        let checked = match self.check_register(&r) {
            Ok(()) => self.spec_for(&r).await,
            Err(e) => Err(e),
        };
        let spec = match checked.and_then(|spec| Self::check_spaces(&r, spec).map(|()| spec)) {
            Ok(spec) => spec,
            Err(e) => {
                count_rejection(&e);
                tracing::warn!(actor = %r.actor_name, error = %e, "registration refused");
                return Err(e.into());
            }
        };
        let actor_id = self.next_actor_id.fetch_add(1, Ordering::SeqCst);
        let host = remote.map_or_else(|| "unknown".to_string(), |a| a.ip().to_string());
        let peer = Peer::of(remote, &r.actor_name);
        let now = Instant::now();
        let num_envs = self.envs_for(&r);
        let entry = ActorEntry::new(r.actor_name.clone(), host, peer, num_envs, now);
        let admitted = self.registry.lock().admit(actor_id, entry, now);
        if let Err(full) = admitted {
            let e = Error::TooManyActors(format!(
                "the learner already serves {} actors (server.max_actors), none of them a registration that never \
                 streamed nor submitted and is older than server.registration_grace_seconds; try again later",
                full.held
            ));
            count_rejection(&e);
            tracing::warn!(actor = %r.actor_name, error = %e, "registration refused");
            return Err(e.into());
        }
        let version = spec.policies.latest().version;
        tracing::info!(actor_id, name = %r.actor_name, num_envs, version, "actor registered");
        Ok(Response::new(pb::RegisterResponse {
            actor_id,
            seed: common::seed::derive(self.run.root_seed, "actor", actor_id),
            run_id: self.run.run_id.clone(),
            policy_version: version,
            hidden_sizes: self.run.hidden_sizes.iter().map(|&h| h as u32).collect(),
            rollout_steps: self.run.rollout_steps as u32,
            incarnation: self.incarnation,
            num_envs: num_envs as u32,
            max_message_bytes: self.run.max_message_bytes as u64,
        }))
    }

    async fn submit_rollout(
        &self,
        request: Request<pb::Rollout>,
    ) -> Result<Response<pb::SubmitRolloutResponse>, Status> {
        let msg = request.into_inner();
        metrics::counter!(m::RECEIVED_BYTES).increment(prost::Message::encoded_len(&msg) as u64);
        let current = self.current_version();
        // Produced by a policy of an earlier learner process (this one may have resumed from an older
        // checkpoint): from a lost future, not misbehaviour. Dropped quietly.
        if msg.incarnation != 0 && msg.incarnation != self.incarnation {
            m::Outcome::Stale.count();
            tracing::debug!(
                actor_id = msg.actor_id,
                version = msg.policy_version,
                "rollout of an earlier learner dropped"
            );
            let outcome = pb::RolloutOutcome::Stale as i32;
            return Ok(Response::new(pb::SubmitRolloutResponse { outcome, policy_version: current }));
        }
        let rollout = match self.check_rollout(&msg) {
            Ok(r) => r,
            Err(e) => {
                count_rejection(&e);
                // The actor's envs moved on without the learner seeing these steps.
                let _ = self.track_episodes(msg.actor_id, None);
                m::Outcome::Rejected.count();
                tracing::debug!(actor_id = msg.actor_id, error = %e, "rollout rejected");
                return Err(e.into());
            }
        };
        let (version, current) = (rollout.policy_version, PolicyVersion(current));
        metrics::histogram!(m::POLICY_LAG).record(version.lag(current) as f64);
        if version.too_old(current, self.run.max_policy_lag) {
            m::Outcome::Stale.count();
            let outcome = pb::RolloutOutcome::Stale as i32;
            return Ok(Response::new(pb::SubmitRolloutResponse { outcome, policy_version: current.0 }));
        }
        let (actor_id, steps) = (msg.actor_id, rollout.len() as u64);
        self.hand_off(rollout).await.map_err(Status::from)?;
        m::Outcome::Accepted.count();
        self.registry.lock().accepted(actor_id, steps, version.0, Instant::now());
        let outcome = pb::RolloutOutcome::Accepted as i32;
        Ok(Response::new(pb::SubmitRolloutResponse { outcome, policy_version: current.0 }))
    }

    type SubscribePolicyStream = PolicyStream;

    async fn subscribe_policy(
        &self,
        request: Request<pb::SubscribePolicyRequest>,
    ) -> Result<Response<Self::SubscribePolicyStream>, Status> {
        let actor_id = request.into_inner().actor_id;
        let (Some(spec), Some(open)) = (self.spec.get(), self.registry.open_stream(actor_id)) else {
            let e = Error::UnknownActor(actor_id);
            count_rejection(&e);
            return Err(e.into());
        };
        let (shutdown, incarnation) = (self.shutdown.clone(), self.incarnation);
        let mut watch = spec.policies.subscribe();
        // Capacity 1 and latest-wins reads: a slow reader gets the newest version, never a backlog.
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            let _open = open;
            loop {
                let update = common::wire::policy_update(&watch.borrow_and_update(), incarnation);
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    sent = tx.send(Ok(update)) => if sent.is_err() { break },
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tx.closed() => break,
                    changed = watch.changed() => if changed.is_err() { break },
                }
            }
        });
        let updates = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(Response::new(Box::pin(updates)))
    }
}
