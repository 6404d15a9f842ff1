//! The two binaries and local mode, composed above the `learner` and `actor` libraries (which do not depend on
//! each other): `learner` (train, serve, eval, render, ...) and `actor`, plus `learner train`'s trainer with
//! in-process samplers (over channels or loopback gRPC).

pub mod actor_cli;
pub mod learner_cli;
pub mod local;
pub mod process;
