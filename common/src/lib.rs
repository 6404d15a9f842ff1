//! What actors and the learner must agree on: environments, the actor-critic model and its distributions,
//! rollouts, policy snapshots, normalisers, seeding and device selection.

pub mod dense;
pub mod device;
pub mod distributions;
pub mod env;
pub mod init;
pub mod metrics;
pub mod model;
pub mod normalize;
pub mod policy;
pub mod policy_cell;
pub mod rollout;
pub mod seed;
pub mod shutdown;
pub mod wire;
