//! The protocol's two identities: which actor sent something, and which policy version produced it. The lag rule
//! (how old data may be and still be trained on) lives here, once.

use serde::{Deserialize, Serialize};

/// An actor's id, handed out by the learner at registration (0 is a local, in-process sampler).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ActorId(pub u64);

/// A policy version: the number of updates since the run started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PolicyVersion(pub u64);

impl PolicyVersion {
    /// How many versions this one is behind `current` (0 if it is not behind).
    pub fn lag(self, current: PolicyVersion) -> u64 {
        current.0.saturating_sub(self.0)
    }

    /// The lag rule: data produced by this version is too old to train on at `current` when it is more than
    /// `max_lag` versions behind (`ppo.max_policy_lag`).
    pub fn too_old(self, current: PolicyVersion, max_lag: u64) -> bool {
        self.lag(current) > max_lag
    }
}

impl std::fmt::Display for ActorId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Display for PolicyVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_rule() {
        let v = |n| PolicyVersion(n);
        assert_eq!(v(3).lag(v(5)), 2);
        assert_eq!(v(7).lag(v(5)), 0, "ahead is not behind");
        assert!(!v(4).too_old(v(5), 1));
        assert!(v(3).too_old(v(5), 1));
        assert!(!v(0).too_old(v(0), 0));
    }
}
