//! What actors and the learner must agree on: environments, the actor-critic network and its distributions, the
//! snapshot codec, rollouts, policy snapshots, normalisers and seeding. No tensor library: candle lives only in the
//! learner's candle backend.

pub mod codec;
pub mod distributions;
pub mod env;
pub mod grpc_codec;
pub mod ids;
pub mod init;
pub mod metrics;
pub mod model;
pub mod net;
pub mod normalize;
pub mod obs;
pub mod policy;
pub mod policy_cell;
pub mod rollout;
pub mod seed;
pub mod shutdown;
pub mod wire;
