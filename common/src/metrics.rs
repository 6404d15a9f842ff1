//! Metric names, in one place for both roles; described at start-up by [`describe`].
//!
//! Conventions: base units, `_total` counters, `_seconds` / `_bytes` suffixes, `_ratio` for 0..1 values. Labels
//! come from small fixed sets only (`outcome`, `reason`).

/// Env steps trained on by the learner (counter; `rate()` gives throughput).
pub const ENV_STEPS: &str = "proxima_learner_env_steps_total";
/// Rollouts received, by `outcome`: `accepted`, `stale`, `rejected`.
pub const ROLLOUTS: &str = "proxima_learner_rollouts_total";
/// Rejected requests, by `reason`.
pub const REJECTED: &str = "proxima_learner_rejected_total";

/// Rejection reasons (values of the `reason` label).
pub mod reason {
    /// Missing or wrong token.
    pub const UNAUTHENTICATED: &str = "unauthenticated";
    /// Env id, spaces or protocol version differ from the learner's.
    pub const MISMATCH: &str = "mismatch";
    /// Shapes or lengths wrong.
    pub const SHAPE: &str = "shape";
    /// NaN or infinity.
    pub const NON_FINITE: &str = "non_finite";
    /// Action outside the action space.
    pub const ACTION: &str = "action";
    /// Policy version newer than the learner's.
    pub const FUTURE_VERSION: &str = "future_version";
    /// Actor id not registered.
    pub const UNKNOWN_ACTOR: &str = "unknown_actor";
    /// Message above the size limit.
    pub const OVERSIZED: &str = "oversized";
}

/// Bytes of rollout messages received (counter).
pub const RECEIVED_BYTES: &str = "proxima_learner_received_bytes_total";
/// Actors with an open policy stream (gauge).
pub const CONNECTED_ACTORS: &str = "proxima_learner_connected_actors";
/// Versions between the learner's policy and the one that produced a rollout (histogram).
pub const POLICY_LAG: &str = "proxima_learner_policy_lag_versions";

/// Env steps an actor produced and delivered (counter).
pub const ACTOR_ENV_STEPS: &str = "proxima_actor_env_steps_total";
/// Rollouts an actor sent, by `outcome`: `accepted`, `stale`, `rejected`.
pub const ACTOR_ROLLOUTS: &str = "proxima_actor_rollouts_total";
/// Seconds from a policy's publication by the learner to its arrival at the actor (histogram).
pub const ACTOR_WEIGHT_LATENCY: &str = "proxima_actor_weight_update_latency_seconds";
