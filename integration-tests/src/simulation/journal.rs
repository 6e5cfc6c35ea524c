//! One totally ordered record of what the simulated fleet did that the invariants judge: every
//! entry gets its index in the journal (its place in the order) and the paused clock's time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// Something a worker, its store or its processors did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A processor session's `initialize` was called.
    Initialized {
        worker: String,
        session: String,
        shard: String,
    },
    /// A processor session had its last call (`lease_lost`, `shutdown_requested`, or
    /// `shard_ended` with SHARD_END checkpointed).
    Ended {
        worker: String,
        session: String,
        shard: String,
    },
    /// A worker process was stopped dead: its sessions end with it.
    Crashed { worker: String },
    /// A processor session's `process_records` was called (logged on entry).
    BatchStart {
        worker: String,
        session: String,
        shard: String,
    },
    /// The store refused a renewal because the lease changed (another worker took it).
    RenewRefused { worker: String, shard: String },
    /// The store made `worker` the owner.
    Took { worker: String, shard: String },
    /// `worker` asked for a lease (a graceful hand-off began): it becomes the owner, and takes
    /// the lease once the old owner has released it.
    AskedFor { worker: String, shard: String },
    /// `worker` released a lease it was handing off (graceful hand-off): the new owner starts
    /// it at its next poll.
    HandedOff { worker: String, shard: String },
}

/// The shared journal.
#[derive(Clone, Debug)]
pub struct Journal(Arc<Mutex<Vec<(Duration, Entry)>>>, Instant);

impl Default for Journal {
    fn default() -> Self {
        Journal(Arc::default(), Instant::now())
    }
}

impl Journal {
    /// Appends `entry` at the current time.
    pub fn push(&self, entry: Entry) {
        let at = self.1.elapsed();
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((at, entry));
    }

    /// `f` applied to every entry so far, without copying them.
    pub fn read<R>(&self, f: impl FnOnce(&[(Duration, Entry)]) -> R) -> R {
        f(&self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The time since the journal began.
    pub fn now(&self) -> Duration {
        self.1.elapsed()
    }
}
