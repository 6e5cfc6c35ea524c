//! [`StatusHandle`]: what a running worker is doing, for health checks and dashboards.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Where the worker is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WorkerPhase {
    /// `run` has not started, or start-up (stream check, lease table, first shard sync) is
    /// under way.
    Starting,
    /// Taking leases and processing shards.
    Running,
    /// Shutting down: processors get their last calls, leases are released.
    ShuttingDown,
    /// `run` has returned.
    Stopped,
}

/// Where a held shard's consumer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShardPhase {
    /// Waiting until its parent shards are processed to their end.
    WaitingOnParents,
    /// Getting an iterator (and initialising the processor the first time).
    Initializing,
    /// Reading and processing records.
    Processing,
    /// Read to its end; waiting for the processor to checkpoint SHARD_END.
    ShardEnded,
    /// The processor gets its last call.
    Stopping,
    /// The processor failed or panicked; the shard restarts from its checkpoint after a back-off.
    RestartPending,
}

/// One shard this worker holds.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShardStatus {
    /// The shard's lease key: its shard id, or for a multi-stream worker
    /// `account:stream:creationEpoch:shardId`.
    pub shard_id: String,
    /// Where its consumer is.
    pub phase: ShardPhase,
    /// How far its last batch was behind the tip, when Kinesis said.
    pub millis_behind_latest: Option<i64>,
    /// User records handed to its processors since this worker took the lease.
    pub records_processed: u64,
    /// When its processor last returned from a batch.
    pub last_batch_at: Option<SystemTime>,
}

/// A snapshot of a worker.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerStatus {
    /// The worker id.
    pub worker_id: String,
    /// Where the worker is in its life.
    pub phase: WorkerPhase,
    /// Every shard it holds, by shard id.
    pub shards: Vec<ShardStatus>,
}

impl WorkerStatus {
    /// The largest `millis_behind_latest` of the shards held (`None` if no shard reported one).
    pub fn max_millis_behind_latest(&self) -> Option<i64> {
        self.shards
            .iter()
            .filter_map(|s| s.millis_behind_latest)
            .max()
    }
}

/// Reads a worker's status from any task, while it runs and after ([`crate::Worker::status_handle`]).
#[derive(Clone, Debug)]
pub struct StatusHandle(pub(crate) Arc<Board>);

impl StatusHandle {
    /// What the worker is doing now.
    pub fn snapshot(&self) -> WorkerStatus {
        let board = self.0.inner.lock().unwrap_or_else(|e| e.into_inner());
        WorkerStatus {
            worker_id: self.0.worker_id.clone(),
            phase: board.phase,
            shards: board.shards.values().cloned().collect(),
        }
    }
}

/// Where the worker and its shard consumers write their status.
#[derive(Debug)]
pub(crate) struct Board {
    worker_id: String,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    phase: WorkerPhase,
    shards: BTreeMap<String, ShardStatus>,
}

impl Board {
    pub(crate) fn new(worker_id: &str) -> Arc<Board> {
        Arc::new(Board {
            worker_id: worker_id.to_owned(),
            inner: Mutex::new(Inner {
                phase: WorkerPhase::Starting,
                shards: BTreeMap::new(),
            }),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub(crate) fn worker_phase(&self, phase: WorkerPhase) {
        self.with(|i| i.phase = phase);
    }

    pub(crate) fn shard_phase(&self, shard: &str, phase: ShardPhase) {
        self.with(|i| match i.shards.get_mut(shard) {
            // Every turn of a shard's loop reports: no allocation when the entry exists.
            Some(s) => s.phase = phase,
            None => {
                let status = ShardStatus {
                    shard_id: shard.to_owned(),
                    phase,
                    millis_behind_latest: None,
                    records_processed: 0,
                    last_batch_at: None,
                };
                i.shards.insert(shard.to_owned(), status);
            }
        });
    }

    pub(crate) fn batch(&self, shard: &str, records: usize, millis_behind_latest: Option<i64>) {
        self.with(|i| {
            if let Some(s) = i.shards.get_mut(shard) {
                s.records_processed += records as u64;
                s.last_batch_at = Some(SystemTime::now());
                if millis_behind_latest.is_some() {
                    s.millis_behind_latest = millis_behind_latest;
                }
            }
        });
    }

    /// The shard is no longer held (or no longer processed here).
    pub(crate) fn remove(&self, shard: &str) {
        self.with(|i| i.shards.remove(shard));
    }
}
