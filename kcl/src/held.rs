//! [`HeldLease`]: a lease this worker holds, shared by the renewer, the shard's consumer and its
//! checkpointer: the row as last written, whether it was lost or is being handed off, and the
//! data read from it (the lease's throughput).

use std::sync::{Arc, Mutex};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::leases::Lease;

/// A lease this worker holds. Its row (whose counter is the token every conditional write needs)
/// is shared by the renewer and the shard's checkpointer, which take turns through the mutex.
#[derive(Debug)]
pub(crate) struct HeldLease {
    pub(crate) key: String,
    /// The shard (the key, or a multi-stream lease's `shardId`).
    pub(crate) shard_id: String,
    pub(crate) lease: tokio::sync::Mutex<Lease>,
    /// Cancelled when the lease is lost (taken by another worker, or not renewed in time).
    pub(crate) lost: CancellationToken,
    pub(crate) last_renewed: Mutex<Instant>,
    /// Cancelled when another worker asked for the lease (a graceful hand-off): the processor
    /// gets `shutdown_requested`, checkpoints, and the lease is then released to that worker.
    pub(crate) handoff: CancellationToken,
    /// When this worker learnt of the hand-off.
    pub(crate) handoff_since: Mutex<Option<Instant>>,
    /// Data bytes delivered to the processor since `read_since` (for the lease's throughput).
    pub(crate) read_bytes: std::sync::atomic::AtomicU64,
    pub(crate) read_since: Mutex<Instant>,
    /// Throughput measures taken so far.
    measures: std::sync::atomic::AtomicU32,
}

impl HeldLease {
    pub(crate) fn new(lease: Lease) -> Arc<Self> {
        Arc::new(HeldLease {
            key: lease.key.clone(),
            shard_id: lease.shard().to_owned(),
            lease: tokio::sync::Mutex::new(lease),
            lost: CancellationToken::new(),
            last_renewed: Mutex::new(Instant::now()),
            handoff: CancellationToken::new(),
            handoff_since: Mutex::new(None),
            read_bytes: std::sync::atomic::AtomicU64::new(0),
            read_since: Mutex::new(Instant::now()),
            measures: std::sync::atomic::AtomicU32::new(0),
        })
    }

    /// The KiB per second delivered since the last call, over how long, and how many such
    /// measures this hold has taken, this one included (`None` when no time has passed).
    pub(crate) fn take_throughput(&self) -> Option<(f64, std::time::Duration, u32)> {
        let now = Instant::now();
        let since = std::mem::replace(
            &mut *self.read_since.lock().unwrap_or_else(|e| e.into_inner()),
            now,
        );
        let bytes = self
            .read_bytes
            .swap(0, std::sync::atomic::Ordering::Relaxed);
        let over = now.saturating_duration_since(since);
        let seconds = over.as_secs_f64();
        if seconds <= 0.0 {
            return None;
        }
        let measures = self
            .measures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .saturating_add(1);
        Some((bytes as f64 / 1024.0 / seconds, over, measures))
    }
}
