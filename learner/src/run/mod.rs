//! A training run: the loop that turns queued rollouts into updates and publishes each new policy, its
//! checkpoints, its run directory and the progress people and tools read.

pub mod checkpoint;
pub mod dir;
pub mod plot;
pub mod progress;
pub mod tensorboard;
pub mod update_loop;
