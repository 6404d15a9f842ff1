//! The bounded queue of rollouts from the gRPC handlers to the update loop. Its sending side is async and holds no
//! thread while the queue is full: a handler awaits a permit of a semaphore with one permit per free slot, then
//! puts the rollout into a bounded crossbeam channel that the permit guarantees has room; the update loop hands
//! a permit back for every rollout it takes. A handler that stops waiting (its client went away, the learner
//! shuts down) leaves nothing behind.

use common::rollout::Rollout;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// The queue's update-loop side is gone: training has stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the rollout queue is closed")]
pub struct Closed;

/// A queue holding at most `capacity` rollouts (at least 1).
pub fn rollout_queue(capacity: usize) -> (QueueSender, QueueReceiver) {
    let capacity = capacity.max(1);
    let (tx, rx) = crossbeam_channel::bounded(capacity);
    let room = Arc::new(Semaphore::new(capacity));
    (QueueSender { tx, room: room.clone() }, QueueReceiver { rx, room: Some(room) })
}

/// The handlers' side; clones share the queue.
#[derive(Debug, Clone)]
pub struct QueueSender {
    tx: Sender<Rollout>,
    room: Arc<Semaphore>,
}

impl QueueSender {
    /// Queues `rollout`, waiting (asynchronously) while the queue is full.
    pub async fn send(&self, rollout: Rollout) -> Result<(), Closed> {
        let permit = self.room.acquire().await.map_err(|_| Closed)?;
        // The slot now belongs to this rollout; the receiver returns it when it takes one.
        permit.forget();
        // Every queued rollout holds a permit, so a permit means the channel has room: `Full` cannot happen.
        self.tx.try_send(rollout).map_err(|_| Closed)
    }
}

/// The update loop's side.
#[derive(Debug)]
pub struct QueueReceiver {
    rx: Receiver<Rollout>,
    /// `None` for a plain channel whose senders are threads that block (local mode's samplers).
    room: Option<Arc<Semaphore>>,
}

impl From<Receiver<Rollout>> for QueueReceiver {
    /// The receiving side of a plain bounded channel (local mode: sampler threads send and block on it).
    fn from(rx: Receiver<Rollout>) -> Self {
        Self { rx, room: None }
    }
}

impl QueueReceiver {
    /// The next rollout, waiting at most `timeout`; `Disconnected` once every sender is gone and the queue is
    /// empty.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Rollout, RecvTimeoutError> {
        let r = self.rx.recv_timeout(timeout)?;
        self.freed();
        Ok(r)
    }

    /// The next rollout if one is queued.
    pub fn try_recv(&self) -> Result<Rollout, TryRecvError> {
        let r = self.rx.try_recv()?;
        self.freed();
        Ok(r)
    }

    /// Rollouts queued now.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    /// True when no rollout is queued.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    fn freed(&self) {
        if let Some(room) = &self.room {
            room.add_permits(1);
        }
    }
}

impl Drop for QueueReceiver {
    /// Wakes every waiting sender with [`Closed`].
    fn drop(&mut self) {
        if let Some(room) = &self.room {
            room.close();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn rollout(steps: usize) -> Rollout {
        Rollout { num_steps: steps, ..Rollout::default() }
    }

    /// Waiting senders hold no thread: with a full queue and more waiting senders than the runtime has blocking
    /// threads, blocking work still runs at once; then every waiting rollout arrives, in order, as the receiver
    /// makes room. (A send on the blocking pool, as before, parks a pool thread per waiting sender and starves
    /// the probe.)
    #[test]
    fn waiting_senders_hold_no_thread() {
        let rt = tokio::runtime::Builder::new_current_thread().max_blocking_threads(2).enable_all().build().unwrap();
        let (tx, rx) = rollout_queue(1);
        let (waiting, probe) = rt.block_on(async {
            tx.send(rollout(0)).await.unwrap();
            let waiting: Vec<_> = (1..=8)
                .map(|i| {
                    let tx = tx.clone();
                    tokio::spawn(async move { tx.send(rollout(i)).await })
                })
                .collect();
            // One thread runs every task: yielding once lets each sender start its send and wait.
            tokio::task::yield_now().await;
            let probe = tokio::time::timeout(Duration::from_secs(5), tokio::task::spawn_blocking(|| 42)).await;
            (waiting, probe)
        });
        assert_eq!(probe.expect("blocking work starved by waiting senders").unwrap(), 42);
        assert!(waiting.iter().all(|w| !w.is_finished()), "the senders were waiting");
        let drain = std::thread::spawn(move || {
            (0..9).map(|_| rx.recv_timeout(Duration::from_secs(5)).map(|r| r.num_steps)).collect::<Vec<_>>()
        });
        for w in waiting {
            rt.block_on(w).unwrap().unwrap();
        }
        let got: Result<Vec<usize>, _> = drain.join().unwrap().into_iter().collect();
        assert_eq!(got.expect("every waiting rollout arrives"), (0..=8).collect::<Vec<_>>());
    }

    /// A dropped receiver wakes waiting senders with `Closed`, and later sends fail at once.
    #[test]
    fn a_closed_queue_answers_closed() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (tx, rx) = rollout_queue(1);
        rt.block_on(tx.send(rollout(1))).unwrap();
        let waiting = rt.spawn({
            let tx = tx.clone();
            async move { tx.send(rollout(2)).await }
        });
        drop(rx);
        let woke = rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), waiting).await });
        assert_eq!(woke.expect("the waiting sender is woken").unwrap(), Err(Closed));
        assert_eq!(rt.block_on(tx.send(rollout(3))), Err(Closed));
    }

    /// A sender that stops waiting (its request was cancelled) takes no slot with it.
    #[test]
    fn a_cancelled_send_keeps_no_slot() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (tx, rx) = rollout_queue(1);
        rt.block_on(tx.send(rollout(1))).unwrap();
        let gave_up = rt.block_on(async { tokio::time::timeout(Duration::from_millis(20), tx.send(rollout(2))).await });
        assert!(gave_up.is_err(), "the queue is full");
        assert_eq!(rx.try_recv().unwrap().num_steps, 1);
        rt.block_on(tx.send(rollout(3))).unwrap();
        assert_eq!(rx.try_recv().unwrap().num_steps, 3);
        assert!(rx.try_recv().is_err());
    }
}
