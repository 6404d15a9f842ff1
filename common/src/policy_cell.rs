//! The latest published policy, shared between the thread that publishes it and the threads and tasks that use
//! it. Latest wins: readers never see a backlog, only the newest snapshot.

use crate::policy::PolicySnapshot;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Holds the newest [`PolicySnapshot`]; blocking readers wait on a condvar, async readers on a `watch`.
#[derive(Debug)]
pub struct PolicyCell {
    latest: Mutex<Arc<PolicySnapshot>>,
    changed: Condvar,
    watch: tokio::sync::watch::Sender<Arc<PolicySnapshot>>,
}

impl PolicyCell {
    /// A cell holding `initial`.
    pub fn new(initial: PolicySnapshot) -> Self {
        let initial = Arc::new(initial);
        let (watch, _) = tokio::sync::watch::channel(initial.clone());
        Self { latest: Mutex::new(initial), changed: Condvar::new(), watch }
    }

    /// Replaces the snapshot and wakes every waiter.
    pub fn publish(&self, snapshot: PolicySnapshot) {
        let snapshot = Arc::new(snapshot);
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = snapshot.clone();
        self.changed.notify_all();
        self.watch.send_replace(snapshot);
    }

    /// The newest snapshot.
    pub fn latest(&self) -> Arc<PolicySnapshot> {
        self.latest.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Blocks until a snapshot newer than `version` of learner `incarnation` is published (a higher version, or
    /// any version of another incarnation: a restarted learner may have resumed from an older version) or
    /// `timeout` passes.
    pub fn wait_newer(&self, incarnation: u64, version: u64, timeout: Duration) -> Option<Arc<PolicySnapshot>> {
        let newer = |s: &PolicySnapshot| s.incarnation != incarnation || s.version > version;
        let guard = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) =
            self.changed.wait_timeout_while(guard, timeout, |s| !newer(s)).unwrap_or_else(|e| e.into_inner());
        newer(&guard).then(|| guard.clone())
    }

    /// An async receiver that sees the newest snapshot after every publish.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Arc<PolicySnapshot>> {
        self.watch.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiters_see_the_latest_version_only() {
        let cell = Arc::new(PolicyCell::new(PolicySnapshot {
            version: 0,
            weights: Default::default(),
            published_at: 0.0,
            incarnation: 0,
        }));
        assert!(cell.wait_newer(0, 0, Duration::from_millis(5)).is_none());
        let c = cell.clone();
        let t = std::thread::spawn(move || c.wait_newer(0, 0, Duration::from_secs(10)).map(|s| s.version));
        std::thread::sleep(Duration::from_millis(20));
        cell.publish(PolicySnapshot { version: 1, weights: Default::default(), published_at: 0.0, incarnation: 0 });
        cell.publish(PolicySnapshot { version: 2, weights: Default::default(), published_at: 0.0, incarnation: 0 });
        let seen = t.join().ok().flatten();
        assert!(matches!(seen, Some(1) | Some(2)));
        assert_eq!(cell.latest().version, 2);
        assert_eq!(cell.subscribe().borrow().version, 2);
        // A restarted learner (another incarnation) at a lower version is newer too.
        cell.publish(PolicySnapshot { version: 1, weights: Default::default(), published_at: 0.0, incarnation: 9 });
        assert_eq!(cell.wait_newer(0, 2, Duration::from_millis(5)).map(|s| s.version), Some(1));
        assert!(cell.wait_newer(9, 1, Duration::from_millis(5)).is_none());
    }
}
