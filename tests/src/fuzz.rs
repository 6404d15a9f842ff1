//! One fuzzing harness for the learner's untrusted inputs, shared by the cargo-fuzz targets in `fuzz/` and the
//! seeded stable test `tests/tests/fuzz_inputs.rs`. Each [`Target`] runs one input through the real code path and
//! panics (a crash, to a fuzzer) when an invariant breaks:
//!
//! - [`Target::Rollout`]: bytes -> prost decode of `pb::Rollout` -> the learner's `SubmitRollout` handler
//!   (conversion, validation, hand-off to the trainer queue);
//! - [`Target::Register`]: bytes -> `pb::RegisterRequest` -> the `Register` handler;
//! - [`Target::Checkpoint`]: bytes written to a file -> `learner::run::checkpoint::load`.
//!
//! Invariants: nothing panics; every error status is one a client can act on ([`ALLOWED_CODES`], never INTERNAL
//! or UNKNOWN); a rejected or stale rollout never reaches the trainer; an accepted one (and a stale one that was
//! validated) passes `Rollout::validate` and an independent check of the documented contract (lengths, every
//! float finite and within the `server.max_abs_*` bounds, actions in the space, episodes sane); Register accepts
//! exactly the requests that match the learner; a checkpoint that loads yields a usable, finite trainer.
//!
//! Inputs of the two RPCs are framed: the first byte picks the env ([`ENVS`], modulo their count), the rest is
//! the protobuf message. Each input gets a fresh service (a learner whose newest policy is [`CURRENT_VERSION`]),
//! so inputs are independent. For mutated rollouts to get past the actor-id check, a rollout `actor_id` below
//! [`SYMBOLIC_ACTORS`] stands for an actor registered just before with the rollout's `num_envs` (clamped to
//! 1..=65536), and `incarnation` [`OWN_INCARNATION`] for the learner's own incarnation.

use anyhow::Context;
use common::env::Space;
use common::policy::{Policy, PolicySnapshot};
use common::policy_cell::PolicyCell;
use common::rollout::Rollout;
use common::wire::{PROTOCOL_VERSION, pb};
use learner::config::TrainConfig;
use learner::queue::{QueueReceiver, rollout_queue};
use learner::run::checkpoint::Checkpointer;
use learner::server::handlers::{LearnerService, RunInfo, Spec};
use learner::update::trainer::Trainer;
use pb::learner_server::Learner;
use prost::Message;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request};

/// The envs inputs can pick: one Discrete and one Box action space.
pub const ENVS: [&str; 2] = ["CartPole-v1", "Pendulum-v1"];
/// The newest policy version of the learner under test.
pub const CURRENT_VERSION: u64 = 5;
/// Rollout actor ids below this stand for a freshly registered actor.
pub const SYMBOLIC_ACTORS: u64 = 16;
/// Rollout incarnation that stands for the learner's own.
pub const OWN_INCARNATION: u64 = 1;
/// The status codes the learner may answer bad input with.
pub const ALLOWED_CODES: [Code; 5] = [
    Code::InvalidArgument,
    Code::FailedPrecondition,
    Code::ResourceExhausted,
    Code::Unauthenticated,
    Code::Unavailable,
];
/// Largest `num_envs` Register accepts.
const MAX_NUM_ENVS: u32 = 65_536;
/// Slack above 0 that Discrete log-probs get for f32 rounding in log-softmax.
const LOG_PROB_SLACK: f64 = 1e-4;

/// An input surface of the learner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `SubmitRollout`.
    Rollout,
    /// `Register`.
    Register,
    /// Checkpoint loading.
    Checkpoint,
}

impl Target {
    /// Every target.
    pub const ALL: [Target; 3] = [Target::Rollout, Target::Register, Target::Checkpoint];

    /// The cargo-fuzz target name (and corpus directory).
    pub fn name(self) -> &'static str {
        match self {
            Target::Rollout => "rollout",
            Target::Register => "register",
            Target::Checkpoint => "checkpoint",
        }
    }
}

/// What one input did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not a protobuf message of the request type (tonic answers before any handler runs).
    Undecodable,
    /// Register answered OK.
    Registered,
    /// SubmitRollout answered OK with ACCEPTED: the rollout reached the trainer queue.
    Accepted,
    /// SubmitRollout answered OK with STALE: dropped.
    Stale,
    /// The call failed with `code`; `what` is the start of the message (the field or check that failed).
    Rejected { code: Code, what: String },
    /// The checkpoint loaded.
    Loaded,
    /// The checkpoint was refused; the reasons under each env's config.
    Refused(String),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Rejected { code, what } => write!(f, "rejected {code:?}: {what}"),
            Outcome::Refused(why) => write!(f, "refused: {why}"),
            other => write!(f, "{}", format!("{other:?}").to_lowercase()),
        }
    }
}

/// A named seed input of one target.
#[derive(Debug, Clone)]
pub struct Seed {
    /// File name in the corpus.
    pub name: String,
    /// The input.
    pub bytes: Vec<u8>,
}

/// The input framing of the RPC targets: the env selector byte, then the encoded message.
pub fn frame(env: usize, msg: &impl Message) -> Vec<u8> {
    let mut bytes = vec![env as u8];
    bytes.extend(msg.encode_to_vec());
    bytes
}

/// The start of an error message up to its first `:` or `,` (at most 48 characters): the field or check.
fn what(message: &str) -> String {
    let m = message.strip_prefix("invalid rollout: ").unwrap_or(message);
    m.split([':', ',']).next().unwrap_or(m).chars().take(48).collect()
}

/// Panics unless `status` carries an allowed code.
fn check_code(rpc: &str, status: &tonic::Status) -> Outcome {
    let code = status.code();
    assert!(ALLOWED_CODES.contains(&code), "{rpc} answered {code:?} (not an input error code): {}", status.message());
    Outcome::Rejected { code, what: what(status.message()) }
}

/// One env the learner under test may train, with what the learner needs to serve it.
struct EnvCase {
    cfg: TrainConfig,
    run: RunInfo,
    /// Observation and action space.
    spaces: (common::env::Space, common::env::Space),
    snapshot: PolicySnapshot,
}

impl EnvCase {
    /// Learner settings for `env` (2 envs x 32 steps per rollout; observation and reward normalisation on
    /// Pendulum, so checkpoints of both kinds exist).
    fn new(env: &str) -> anyhow::Result<Self> {
        let mut overrides = vec![
            format!("env={env:?}"),
            "actors.num_envs=2".into(),
            "actors.rollout_steps=32".into(),
            "ppo.minibatch_size=64".into(),
        ];
        if env == "Pendulum-v1" {
            overrides.extend(["normalize.observations=true".into(), "normalize.rewards=true".into()]);
        }
        let cfg = TrainConfig::load(None, &overrides)?;
        let mut snapshot = Trainer::new(&cfg)?.snapshot()?;
        snapshot.version = CURRENT_VERSION;
        let env_spec = common::env::make(env)?;
        let spaces = (env_spec.observation_space(), env_spec.action_space());
        let run = RunInfo::of(&cfg, "fuzz".into());
        Ok(Self { cfg, run, spaces, snapshot })
    }

    fn obs_dim(&self) -> usize {
        self.spaces.0.flat_dim()
    }

    /// A fresh service and the trainer's end of its rollout queue.
    fn service(&self) -> (LearnerService, QueueReceiver) {
        let (tx, rx) = rollout_queue(self.cfg.server.queue_capacity);
        let (observation_space, action_space) = self.spaces.clone();
        let policies = Arc::new(PolicyCell::new(self.snapshot.clone()));
        let spec = Spec { observation_space, action_space, policies };
        (LearnerService::new(self.run.clone(), spec, tx, CancellationToken::new()), rx)
    }

    /// A registration that matches this learner.
    fn register_request(&self, num_envs: u32) -> pb::RegisterRequest {
        pb::RegisterRequest {
            actor_name: "fuzz".into(),
            env_id: self.cfg.env.id.clone(),
            observation_space: Some((&self.spaces.0).into()),
            action_space: Some((&self.spaces.1).into()),
            num_envs,
            protocol_version: PROTOCOL_VERSION as i32,
            learner_num_envs: false,
        }
    }

    /// The codes a correct learner may refuse `r` with; empty when it must accept it.
    fn register_refusals(&self, r: &pb::RegisterRequest) -> Vec<Code> {
        let same_space = |theirs: &Option<pb::Space>, ours: &Space| {
            theirs.as_ref().map(Space::try_from).is_some_and(|s| s.as_ref() == Ok(ours))
        };
        let mismatches = [
            r.protocol_version != PROTOCOL_VERSION as i32,
            r.env_id != self.cfg.env.id,
            !same_space(&r.observation_space, &self.spaces.0),
            !same_space(&r.action_space, &self.spaces.1),
            r.num_envs > MAX_NUM_ENVS,
        ];
        let mut codes = Vec::new();
        if r.actor_name.len() > self.cfg.server.max_actor_name_bytes {
            codes.push(Code::InvalidArgument);
        }
        if mismatches.contains(&true) {
            codes.push(Code::FailedPrecondition);
        }
        codes
    }

    /// Why `r` breaks the documented rollout contract for this learner, if it does: `Rollout::validate` and an
    /// independent check written from the proto and config docs (it must agree with `validate` on what passes).
    fn violation<'a>(&self, r: &'a Rollout) -> Option<String> {
        let (d, space, s) = (self.obs_dim(), &self.spaces.1, &self.cfg.server);
        if let Err(e) = r.validate(&self.spaces.0, space, &s.bounds()) {
            return Some(format!("Rollout::validate refuses it: {e}"));
        }
        let (n, a) = (r.num_steps * r.num_envs, space.flat_dim());
        if n == 0 {
            return Some("it holds no transition".into());
        }
        let truncated = r.truncated.iter().filter(|t| **t).count();
        let lens = [
            ("obs", r.obs.len(), n * d),
            ("actions", r.actions.len(), n * a),
            ("log_probs", r.log_probs.len(), n),
            ("values", r.values.len(), n),
            ("rewards", r.rewards.len(), n),
            ("terminated", r.terminated.len(), n),
            ("truncated", r.truncated.len(), n),
            ("final_obs", r.final_obs.len(), truncated * d),
            ("next_obs", r.next_obs.len(), r.num_envs * d),
        ];
        if let Some((field, got, want)) = lens.iter().find(|(_, got, want)| got != want) {
            return Some(format!("{field} holds {got} values, [T, N, ...] needs {want}"));
        }
        let lp = s.max_abs_log_prob_per_dim * a as f64;
        let (log_probs, actions) = match space {
            Space::Discrete { n } => ((-lp, LOG_PROB_SLACK), (0.0, *n as f64 - 1.0)),
            Space::MultiDiscrete { nvec } => {
                ((-lp, LOG_PROB_SLACK), (0.0, nvec.iter().max().map_or(0.0, |&n| n as f64 - 1.0)))
            }
            Space::Box { .. } => ((-lp, lp), (-s.max_abs_action, s.max_abs_action)),
        };
        let (obs, value, reward) = (s.max_abs_observation, s.max_abs_value, s.max_abs_reward);
        // uint8 observations have no values outside their dtype's range.
        let floats = |o: &'a common::obs::ObsBuf| o.as_f32().unwrap_or(&[]);
        let ranges: [(&str, &[f32], (f64, f64)); 7] = [
            ("obs", floats(&r.obs), (-obs, obs)),
            ("final_obs", floats(&r.final_obs), (-obs, obs)),
            ("next_obs", floats(&r.next_obs), (-obs, obs)),
            ("values", &r.values, (-value, value)),
            ("rewards", &r.rewards, (-reward, reward)),
            ("log_probs", &r.log_probs, log_probs),
            ("actions", &r.actions, actions),
        ];
        for (field, xs, (low, high)) in ranges {
            let outside = |x: &f32| !x.is_finite() || f64::from(*x) < low || f64::from(*x) > high;
            if let Some(i) = xs.iter().position(outside) {
                return Some(format!("{field}[{i}] = {:e} is not a finite value in [{low:e}, {high:e}]", xs[i]));
            }
        }
        if let Some(i) = r.actions.chunks(a).position(|x| space.check(x).is_err()) {
            return Some(format!("action {i} = {:?} is not in {}", &r.actions[i * a..(i + 1) * a], space.describe()));
        }
        let bad_episode = |e: &&common::env::EpisodeStats| {
            e.env_index >= r.num_envs
                || !e.episode_return.is_finite()
                || e.episode_return.abs() > reward * f64::from(e.length.max(1))
        };
        r.episodes.iter().find(bad_episode).map(|e| format!("episode record {e:?} is impossible"))
    }

    /// Panics unless `trainer` (loaded from a checkpoint) publishes a policy actors can use and holds only finite
    /// numbers.
    fn check_loaded(&self, trainer: &Trainer) {
        let snapshot = trainer.snapshot().unwrap_or_else(|e| unusable("cannot publish its policy", e));
        if let Err(e) = Policy::from_snapshot(trainer.net().spec(), &snapshot) {
            unusable("publishes weights actors cannot load", e);
        }
        let params = trainer.params().unwrap_or_else(|e| unusable("has no parameters", e));
        let adam = trainer.optimizer_state().unwrap_or_else(|e| unusable("has no optimiser state", e));
        for (what, values) in [("parameters", &params), ("first moments", &adam.m), ("second moments", &adam.v)] {
            assert!(values.iter().all(|x| x.is_finite()), "a checkpoint with non-finite {what} loaded");
        }
        let state = trainer.state();
        let mut stats: Vec<f64> = vec![state.beta];
        stats.extend(state.recent.iter().map(|(ret, _)| ret));
        for rms in [trainer.obs_normalizer().map(|n| &n.rms), state.reward_rms.as_ref()].into_iter().flatten() {
            stats.extend(rms.mean.iter().chain(&rms.var).chain([&rms.count]));
        }
        assert!(stats.iter().all(|x| x.is_finite()), "a checkpoint with non-finite statistics loaded: {state:?}");
    }
}

/// Fails the check of a loaded checkpoint.
fn unusable(what: &str, e: impl std::fmt::Display) -> ! {
    panic!("a loaded checkpoint's trainer {what}: {e}")
}

/// Runs inputs against the real handlers and checkpoint loader (see the module docs).
pub struct Harness {
    rt: tokio::runtime::Runtime,
    cases: Vec<EnvCase>,
    /// Where checkpoint inputs are written to be loaded.
    file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// A harness for every env of [`ENVS`].
    pub fn new() -> anyhow::Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
        let cases = ENVS.iter().map(|env| EnvCase::new(env)).collect::<anyhow::Result<_>>()?;
        let dir = tempfile::tempdir()?;
        Ok(Self { rt, cases, file: dir.path().join("input.safetensors"), _dir: dir })
    }

    /// Runs one input of `target`, panicking when an invariant breaks.
    pub fn run(&self, target: Target, data: &[u8]) -> Outcome {
        match target {
            Target::Rollout => self.rollout(data),
            Target::Register => self.register(data),
            Target::Checkpoint => self.checkpoint(data),
        }
    }

    /// The env case an RPC input picks, and the message bytes.
    fn unframe<'a>(&self, data: &'a [u8]) -> Option<(&EnvCase, &'a [u8])> {
        let (&env, message) = data.split_first()?;
        Some((&self.cases[usize::from(env) % self.cases.len()], message))
    }

    fn rollout(&self, data: &[u8]) -> Outcome {
        let Some((case, bytes)) = self.unframe(data) else { return Outcome::Undecodable };
        let Ok(mut msg) = pb::Rollout::decode(bytes) else { return Outcome::Undecodable };
        let (svc, queue) = case.service();
        let registered = (msg.actor_id < SYMBOLIC_ACTORS).then(|| msg.num_envs.clamp(1, MAX_NUM_ENVS));
        if let Some(num_envs) = registered {
            let reply = self.rt.block_on(svc.register(Request::new(case.register_request(num_envs))));
            msg.actor_id =
                reply.unwrap_or_else(|s| panic!("a valid registration was refused: {s:?}")).into_inner().actor_id;
        }
        if msg.incarnation == OWN_INCARNATION {
            msg.incarnation = svc.incarnation();
        }
        let reply = self.rt.block_on(svc.submit_rollout(Request::new(msg.clone())));
        let queued: Vec<Rollout> = std::iter::from_fn(|| queue.try_recv().ok()).collect();
        let reply = match reply {
            Ok(reply) => reply.into_inner(),
            Err(status) => {
                assert!(queued.is_empty(), "a rejected rollout reached the trainer ({status:?})");
                return check_code("SubmitRollout", &status);
            }
        };
        assert_eq!(reply.policy_version, CURRENT_VERSION, "SubmitRollout reports another policy version");
        let outcome = match pb::RolloutOutcome::try_from(reply.outcome) {
            Ok(pb::RolloutOutcome::Accepted) => Outcome::Accepted,
            Ok(pb::RolloutOutcome::Stale) => Outcome::Stale,
            other => panic!("SubmitRollout answered OK with outcome {other:?}"),
        };
        let foreign = msg.incarnation != 0 && msg.incarnation != svc.incarnation();
        if outcome == Outcome::Stale {
            assert!(queued.is_empty(), "a stale rollout reached the trainer");
            if foreign {
                // Dropped unseen: produced by another learner process's policy.
                return outcome;
            }
        }
        // Anything else answered OK has passed validation.
        let rollout = common::wire::rollout(&msg, case.spaces.0.dtype())
            .unwrap_or_else(|e| panic!("answered {outcome}, yet does not decode: {e}"));
        if let Some(why) = case.violation(&rollout) {
            panic!("SubmitRollout answered {outcome} for an invalid rollout: {why}");
        }
        assert_eq!(registered, Some(msg.num_envs), "answered {outcome} with num_envs differing from the registration");
        let lag = CURRENT_VERSION.checked_sub(rollout.policy_version.0);
        let lag = lag.unwrap_or_else(|| panic!("answered {outcome} for future version {}", rollout.policy_version));
        assert_eq!(outcome == Outcome::Stale, lag > case.cfg.ppo.max_policy_lag, "{outcome} at policy lag {lag}");
        if outcome == Outcome::Accepted {
            assert!(!foreign, "accepted a rollout of another learner incarnation");
            // Each input meets a freshly registered actor, whose episodes in progress began before the learner saw
            // it: the first record of each env is checked against the unseen-steps bound but not counted; a later
            // record of the same env was seen whole and reaches the trainer.
            let mut seen_env = vec![false; rollout.num_envs];
            let counted = rollout.episodes.iter().filter(|e| std::mem::replace(&mut seen_env[e.env_index], true));
            let expected = Rollout { episodes: counted.cloned().collect(), ..rollout.clone() };
            assert_eq!(queued, [expected], "the trainer did not get exactly the accepted rollout");
        }
        outcome
    }

    fn register(&self, data: &[u8]) -> Outcome {
        let Some((case, bytes)) = self.unframe(data) else { return Outcome::Undecodable };
        let Ok(req) = pb::RegisterRequest::decode(bytes) else { return Outcome::Undecodable };
        let (svc, _queue) = case.service();
        let expected = case.register_refusals(&req);
        match self.rt.block_on(svc.register(Request::new(req))) {
            Ok(reply) => {
                assert!(expected.is_empty(), "Register accepted a request a correct learner refuses with {expected:?}");
                let r = reply.into_inner();
                let want = (CURRENT_VERSION, svc.incarnation(), case.cfg.actors.rollout_steps as u32);
                assert_eq!((r.policy_version, r.incarnation, r.rollout_steps), want, "Register's answer: {r:?}");
                let hidden: Vec<usize> = r.hidden_sizes.iter().map(|&h| h as usize).collect();
                assert_eq!(hidden, case.cfg.model.hidden_sizes, "Register announces another model");
                Outcome::Registered
            }
            Err(status) => {
                let outcome = check_code("Register", &status);
                // A request a correct learner accepts (`expected` empty) must not be refused either.
                let matching = expected.contains(&status.code());
                assert!(matching, "Register answered {status:?}, a correct learner answers one of {expected:?}");
                outcome
            }
        }
    }

    fn checkpoint(&self, data: &[u8]) -> Outcome {
        let file = &self.file;
        std::fs::write(file, data).unwrap_or_else(|e| panic!("cannot write {}: {e}", file.display()));
        let mut refusals = BTreeSet::new();
        for case in &self.cases {
            match learner::run::checkpoint::load(file, &case.cfg) {
                Ok(trainer) => {
                    case.check_loaded(&trainer);
                    return Outcome::Loaded;
                }
                Err(learner::Error::Checkpoint { reason, .. }) => refusals.insert(what(&reason)),
                Err(e) => refusals.insert(what(&e.to_string())),
            };
        }
        Outcome::Refused(refusals.into_iter().collect::<Vec<_>>().join(" | "))
    }

    /// Valid inputs of `target` for every env: the seed corpus.
    pub fn seeds(&self, target: Target) -> anyhow::Result<Vec<Seed>> {
        let mut seeds = Vec::new();
        for (i, case) in self.cases.iter().enumerate() {
            let env = case.cfg.env.id.to_lowercase();
            match target {
                Target::Rollout => {
                    // A short rollout and one long enough for Pendulum's time limit (truncation, final_obs).
                    for (num_envs, steps) in [(2, 32), (1, 201)] {
                        let rollout = self.sample(case, num_envs, steps)?;
                        let name = format!("seed-{env}-{num_envs}x{steps}");
                        seeds.push(Seed { name, bytes: frame(i, &pb::Rollout::from(&rollout)) });
                    }
                }
                Target::Register => {
                    seeds.push(Seed { name: format!("seed-{env}"), bytes: frame(i, &case.register_request(2)) });
                }
                Target::Checkpoint => {
                    let mut trainer = Trainer::new(&case.cfg)?;
                    let mut rollout = self.sample(case, case.cfg.actors.num_envs, case.cfg.actors.rollout_steps)?;
                    rollout.policy_version = common::ids::PolicyVersion(trainer.version());
                    trainer.update(vec![rollout])?;
                    let dir = tempfile::tempdir()?;
                    let path = Checkpointer::new(dir.path(), 1)?.save(&trainer)?;
                    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                    seeds.push(Seed { name: format!("seed-{env}.safetensors"), bytes });
                }
            }
        }
        Ok(seeds)
    }

    /// A rollout of `case`'s env by its policy, of a symbolic actor (id 0).
    fn sample(&self, case: &EnvCase, num_envs: usize, steps: usize) -> anyhow::Result<Rollout> {
        let cfg = actor::SamplerConfig { num_envs, rollout_steps: steps, ..Default::default() };
        let mut sampler = actor::Sampler::new(&case.cfg.env.id, &cfg, case.cfg.seed)?;
        let space = sampler.action_space();
        let spec = common::model::ModelSpec::resolve(&case.cfg.model, &sampler.observation_space(), &space)?;
        let mut policy = Policy::from_snapshot(&spec, &case.snapshot)?;
        Ok(Rollout { actor_id: common::ids::ActorId(0), ..sampler.collect(&mut policy)? })
    }
}

/// The process-wide harness of the cargo-fuzz targets.
static FUZZ: LazyLock<Harness> =
    LazyLock::new(|| Harness::new().unwrap_or_else(|e| panic!("cannot set up the fuzz harness: {e:#}")));

/// Entry point of the cargo-fuzz targets: one input of `target` on a harness shared by the whole process.
pub fn fuzz(target: Target, data: &[u8]) {
    FUZZ.run(target, data);
}
