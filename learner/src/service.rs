//! The gRPC handlers: authenticate (interceptor), validate, convert, hand off. No tensor math here.

use crate::error::Error;
use common::env::Space;
use common::metrics as m;
use common::policy::PolicySnapshot;
use common::policy_cell::PolicyCell;
use common::rollout::Rollout;
use common::wire::{PROTOCOL_VERSION, pb};
use crossbeam_channel::{Sender, TrySendError};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
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
    /// Observation space.
    pub observation_space: Space,
    /// Action space.
    pub action_space: Space,
    /// Model hidden sizes.
    pub hidden_sizes: Vec<usize>,
    /// Steps per env per rollout the learner asks for.
    pub rollout_steps: usize,
    /// Root seed (actor seeds derive from it).
    pub root_seed: u64,
    /// Run id.
    pub run_id: String,
    /// Rollouts more than this many versions old are dropped.
    pub max_policy_lag: u64,
}

#[derive(Debug, Clone)]
struct ActorEntry {
    name: String,
    num_envs: usize,
}

/// Shared state of the service.
pub struct LearnerService {
    run: RunInfo,
    actors: Mutex<HashMap<u64, ActorEntry>>,
    next_actor_id: AtomicU64,
    connected: Arc<AtomicI64>,
    policies: Arc<PolicyCell>,
    rollouts: Sender<Rollout>,
    shutdown: CancellationToken,
}

impl LearnerService {
    /// A service handing valid rollouts to `rollouts` and streaming policies from `policies`.
    pub fn new(
        run: RunInfo,
        policies: Arc<PolicyCell>,
        rollouts: Sender<Rollout>,
        shutdown: CancellationToken,
    ) -> Self {
        // Ids from an earlier learner process must not collide with this one's: start above the current time.
        let base = (common::policy::unix_now() as u64) << 16;
        Self {
            run,
            actors: Mutex::new(HashMap::new()),
            next_actor_id: AtomicU64::new(base),
            connected: Arc::new(AtomicI64::new(0)),
            policies,
            rollouts,
            shutdown,
        }
    }

    fn actor(&self, id: u64) -> Option<ActorEntry> {
        self.actors.lock().unwrap_or_else(|e| e.into_inner()).get(&id).cloned()
    }

    fn check_register(&self, r: &pb::RegisterRequest) -> Result<(), Error> {
        let run = &self.run;
        if r.protocol_version != PROTOCOL_VERSION as i32 {
            return Err(Error::Mismatch(format!(
                "protocol version: actor speaks {}, learner speaks {}",
                r.protocol_version, PROTOCOL_VERSION as i32
            )));
        }
        if r.env_id != run.env_id {
            return Err(Error::Mismatch(format!("env id: actor runs {:?}, learner trains {:?}", r.env_id, run.env_id)));
        }
        let spaces = [
            ("observation space", &r.observation_space, &run.observation_space),
            ("action space", &r.action_space, &run.action_space),
        ];
        for (what, theirs, ours) in spaces {
            let theirs = theirs.as_ref().map(Space::try_from);
            if !matches!(&theirs, Some(Ok(s)) if s == ours) {
                let shown = match theirs {
                    Some(Ok(s)) => s.describe(),
                    Some(Err(e)) => e,
                    None => "none".into(),
                };
                return Err(Error::Mismatch(format!("{what}: actor has {shown}, learner has {}", ours.describe())));
            }
        }
        if r.num_envs == 0 || r.num_envs > 65_536 {
            return Err(Error::Mismatch(format!("num_envs: {} is outside 1..=65536", r.num_envs)));
        }
        Ok(())
    }

    fn check_rollout(&self, msg: &pb::Rollout) -> Result<Rollout, Error> {
        let entry = self.actor(msg.actor_id).ok_or(Error::UnknownActor(msg.actor_id))?;
        let rollout = Rollout::try_from(msg)?;
        if rollout.num_envs != entry.num_envs {
            return Err(Error::Rollout(common::rollout::RolloutError {
                field: "num_envs",
                reason: format!(
                    "{} differs from the {} envs registered by {}",
                    rollout.num_envs, entry.num_envs, entry.name
                ),
                kind: common::rollout::RolloutErrorKind::Shape,
            }));
        }
        rollout.validate(self.run.observation_space.flat_dim(), &self.run.action_space)?;
        let current = self.policies.latest().version;
        if rollout.policy_version > current {
            return Err(Error::FutureVersion { got: rollout.policy_version, current });
        }
        Ok(rollout)
    }

    /// Queues a rollout for the trainer, waiting while the queue is full (backpressure on the sender).
    async fn hand_off(&self, mut rollout: Rollout) -> Result<(), Error> {
        loop {
            match self.rollouts.try_send(rollout) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(r)) => {
                    if self.shutdown.is_cancelled() {
                        return Err(Error::Unavailable("learner is shutting down".into()));
                    }
                    rollout = r;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err(TrySendError::Disconnected(_)) => {
                    return Err(Error::Unavailable("learner has stopped training".into()));
                }
            }
        }
    }
}

fn update_message(s: &PolicySnapshot) -> pb::PolicyUpdate {
    pb::PolicyUpdate { version: s.version, weights: s.weights.clone(), published_at: s.published_at }
}

/// Decrements the connected-actors gauge when a policy stream ends.
struct Connected(Arc<AtomicI64>);

impl Connected {
    fn new(counter: Arc<AtomicI64>) -> Self {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        metrics::gauge!(m::CONNECTED_ACTORS).set(n as f64);
        Self(counter)
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        let n = self.0.fetch_sub(1, Ordering::SeqCst) - 1;
        metrics::gauge!(m::CONNECTED_ACTORS).set(n as f64);
    }
}

type PolicyStream = Pin<Box<dyn Stream<Item = Result<pb::PolicyUpdate, Status>> + Send>>;

#[tonic::async_trait]
impl pb::learner_server::Learner for LearnerService {
    async fn register(&self, request: Request<pb::RegisterRequest>) -> Result<Response<pb::RegisterResponse>, Status> {
        let r = request.into_inner();
        if let Err(e) = self.check_register(&r) {
            count_rejection(&e);
            tracing::warn!(actor = %r.actor_name, error = %e, "registration refused");
            return Err(e.into());
        }
        let actor_id = self.next_actor_id.fetch_add(1, Ordering::SeqCst);
        let entry = ActorEntry { name: r.actor_name.clone(), num_envs: r.num_envs as usize };
        self.actors.lock().unwrap_or_else(|e| e.into_inner()).insert(actor_id, entry);
        let version = self.policies.latest().version;
        tracing::info!(actor_id, name = %r.actor_name, num_envs = r.num_envs, version, "actor registered");
        Ok(Response::new(pb::RegisterResponse {
            actor_id,
            seed: common::seed::derive(self.run.root_seed, "actor", actor_id),
            run_id: self.run.run_id.clone(),
            policy_version: version,
            hidden_sizes: self.run.hidden_sizes.iter().map(|&h| h as u32).collect(),
            rollout_steps: self.run.rollout_steps as u32,
        }))
    }

    async fn submit_rollout(
        &self,
        request: Request<pb::Rollout>,
    ) -> Result<Response<pb::SubmitRolloutResponse>, Status> {
        let msg = request.into_inner();
        metrics::counter!(m::RECEIVED_BYTES).increment(prost::Message::encoded_len(&msg) as u64);
        let rollout = match self.check_rollout(&msg) {
            Ok(r) => r,
            Err(e) => {
                count_rejection(&e);
                metrics::counter!(m::ROLLOUTS, "outcome" => "rejected").increment(1);
                tracing::debug!(actor_id = msg.actor_id, error = %e, "rollout rejected");
                return Err(e.into());
            }
        };
        let current = self.policies.latest().version;
        let lag = current - rollout.policy_version;
        metrics::histogram!(m::POLICY_LAG).record(lag as f64);
        if lag > self.run.max_policy_lag {
            metrics::counter!(m::ROLLOUTS, "outcome" => "stale").increment(1);
            let outcome = pb::RolloutOutcome::Stale as i32;
            return Ok(Response::new(pb::SubmitRolloutResponse { outcome, policy_version: current }));
        }
        self.hand_off(rollout).await.map_err(Status::from)?;
        metrics::counter!(m::ROLLOUTS, "outcome" => "accepted").increment(1);
        let outcome = pb::RolloutOutcome::Accepted as i32;
        Ok(Response::new(pb::SubmitRolloutResponse { outcome, policy_version: current }))
    }

    type SubscribePolicyStream = PolicyStream;

    async fn subscribe_policy(
        &self,
        request: Request<pb::SubscribePolicyRequest>,
    ) -> Result<Response<Self::SubscribePolicyStream>, Status> {
        let actor_id = request.into_inner().actor_id;
        if self.actor(actor_id).is_none() {
            let e = Error::UnknownActor(actor_id);
            count_rejection(&e);
            return Err(e.into());
        }
        let connected = Connected::new(self.connected.clone());
        let shutdown = self.shutdown.clone();
        let mut watch = self.policies.subscribe();
        // Capacity 1 and latest-wins reads: a slow reader gets the newest version, never a backlog.
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            let _connected = connected;
            loop {
                let update = update_message(&watch.borrow_and_update().clone());
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
