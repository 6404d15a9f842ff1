//! Experience for the library's own tests: rollouts of a real sampler (the actor library, a dev-dependency) with the
//! trainer's current policy.

#![allow(clippy::unwrap_used)]

use crate::config::TrainConfig;
use crate::update::trainer::Trainer;
use common::policy::Policy;
use common::rollout::Rollout;

/// A sampler of `cfg`'s env with its `actors` settings, seeded by `seed`.
pub fn sampler(cfg: &TrainConfig, seed: u64) -> actor::Sampler {
    let sampler_cfg = actor::SamplerConfig {
        num_envs: cfg.actors.num_envs,
        rollout_steps: cfg.actors.rollout_steps,
        policy_wait: actor::PolicyWait::Never,
    };
    actor::Sampler::new(&cfg.env.id, &sampler_cfg, seed).unwrap()
}

/// One rollout of `sampler` with the trainer's current policy.
pub fn collect(trainer: &Trainer, sampler: &mut actor::Sampler) -> Rollout {
    let mut policy = Policy::from_snapshot(trainer.net().spec(), &trainer.snapshot().unwrap()).unwrap();
    sampler.collect(&mut policy).unwrap()
}
