//! One PPO update: the trainer (anneal, assemble the batch, run the epochs, adapt β), GAE, the loss with its
//! guard, the optimiser, and the backends that compute it.

pub mod backend;
pub mod gae;
pub mod optim;
pub mod ppo;
pub mod trainer;
