//! Graceful hand-offs, as KCL 3.x does them with `checkpointOwner`: a worker that steals a lease
//! asks for it instead of taking it, and starts only once the owner has checkpointed and let go.
//!
//! 1. The new owner writes `leaseOwner` = itself and `checkpointOwner` = the old owner, if the
//!    lease is still the old owner's with no hand-off under way. The counter does not move.
//! 2. The old owner's next renewal returns the lease with `checkpointOwner` = itself: its
//!    processor gets `shutdown_requested` and checkpoints; the old owner then releases the lease
//!    (counter bumped, `checkpointOwner` removed). A processor that has not stopped within the
//!    hand-off timeout (default 30 s) loses the lease anyway.
//! 3. The new owner reads the lease every poll (1 s) and takes it once released. If the old
//!    owner stops renewing (killed) for the failover time, or nothing happens within the
//!    timeout plus the failover time, it takes the lease without waiting further.
//!
//! Until step 2 ends, the old owner is the lease's actual owner: its checkpoints are accepted,
//! the new owner's would not be, and only one processor runs. So a planned move processes no
//! record twice (when the processor checkpoints in `shutdown_requested`).

use std::sync::Arc;

use tokio::time::Instant;

use super::LeaseCoordinator;
use crate::held::HeldLease;
use crate::leases::{Lease, LeaseError};

/// A lease handed off to this worker, not yet released by its old owner.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Awaiting {
    /// The counter last read.
    counter: u64,
    /// When this worker last saw the counter move.
    changed_at: Instant,
    /// When the hand-off began.
    since: Instant,
}

impl LeaseCoordinator {
    /// Starts waiting for a lease handed off to this worker, whose counter was last seen moving
    /// at `changed_at` (`None`: now).
    pub(super) fn await_handoff(&self, lease: &Lease, changed_at: Option<Instant>) {
        let now = Instant::now();
        self.awaiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(lease.key.clone())
            .or_insert(Awaiting {
                counter: lease.counter,
                changed_at: changed_at.unwrap_or(now),
                since: now,
            });
    }

    /// The keys of the leases on their way to this worker.
    pub(super) fn awaiting_keys(&self) -> Vec<String> {
        self.awaiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// How many leases are on their way to this worker.
    pub(crate) fn awaiting_count(&self) -> usize {
        self.awaiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// After a renewal: when the stored lease asks this worker to hand it off, tells its
    /// processor (once).
    pub(super) fn notice_handoff(&self, held: &HeldLease, stored: &Lease) {
        let me = Some(self.worker_id.as_str());
        if stored.checkpoint_owner.as_deref() != me
            || stored.owner.as_deref() == me
            || held.handoff.is_cancelled()
        {
            return;
        }
        *held.handoff_since.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        tracing::info!(worker = %self.worker_id, lease = %held.key, to = ?stored.owner, "another worker asked for the lease: its processor checkpoints and stops, then the lease is handed over");
        held.handoff.cancel();
    }

    /// Hands the lease over anyway once the hand-off has waited for its processor longer than
    /// the timeout: the processor gets `lease_lost`.
    pub(super) async fn enforce_handoff_timeout(&self, held: &HeldLease) {
        let since = *held.handoff_since.lock().unwrap_or_else(|e| e.into_inner());
        let Some(since) = since else { return };
        if since.elapsed() <= self.handoff_timeout || held.lost.is_cancelled() {
            return;
        }
        tracing::warn!(worker = %self.worker_id, lease = %held.key, timeout = ?self.handoff_timeout, "the processor did not stop within the graceful hand-off timeout: the lease is handed over now (the processor gets lease_lost; the new owner starts from the last checkpoint)");
        self.release(held).await;
    }

    /// Reads each lease handed off to this worker and holds those their old owner has released
    /// (or that it stopped renewing for the failover time, or that waited longer than the
    /// hand-off timeout plus the failover time). Fails only when the lease table is gone.
    pub(crate) async fn poll_handoffs(&self) -> Result<Vec<Arc<HeldLease>>, LeaseError> {
        let awaiting: Vec<(String, Awaiting)> = self
            .awaiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, a)| (k.clone(), *a))
            .collect();
        let mut taken = Vec::new();
        for (key, mut waiting) in awaiting {
            let lease = match self.store.get(&key).await {
                Ok(Some(lease)) => lease,
                Ok(None) => {
                    self.stop_awaiting(&key);
                    continue;
                }
                Err(e @ LeaseError::TableNotFound { .. }) => return Err(e),
                Err(e) => {
                    tracing::debug!(worker = %self.worker_id, lease = %key, error = %e, "reading a lease handed off to this worker failed; read again next poll");
                    continue;
                }
            };
            if lease.owner.as_deref() != Some(self.worker_id.as_str()) {
                tracing::info!(worker = %self.worker_id, lease = %key, owner = ?lease.owner, "a lease handed off to this worker went to another");
                self.stop_awaiting(&key);
                self.let_go_unheld(&lease).await;
                continue;
            }
            let now = Instant::now();
            if lease.counter != waiting.counter {
                waiting.counter = lease.counter;
                waiting.changed_at = now;
            }
            let why = if !lease.is_handing_off() {
                Some("released by its old owner")
            } else if now.saturating_duration_since(waiting.changed_at) > self.failover_time {
                Some("its old owner stopped renewing it")
            } else if now.saturating_duration_since(waiting.since)
                > self.handoff_timeout + self.failover_time
            {
                Some("its old owner did not release it within the hand-off timeout")
            } else {
                None
            };
            let Some(why) = why else {
                if let Some(a) = self
                    .awaiting
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_mut(&key)
                {
                    *a = waiting;
                }
                continue;
            };
            match self.store.take(&lease, &self.worker_id).await {
                Ok(mine) => {
                    let waited = now.saturating_duration_since(waiting.since);
                    tracing::info!(worker = %self.worker_id, lease = %key, why, waited = ?waited, "took a lease handed off to this worker");
                    crate::kcl_metrics::taken(true);
                    crate::kcl_metrics::hand_off_wait(waited);
                    taken.push(self.hold(mine));
                }
                Err(e @ LeaseError::TableNotFound { .. }) => return Err(e),
                // Renewed or released meanwhile: read again next poll.
                Err(e) => {
                    tracing::debug!(worker = %self.worker_id, lease = %key, error = %e, "taking a lease handed off to this worker failed; read again next poll");
                }
            }
        }
        Ok(taken)
    }

    /// Releases a lease that asks this worker to hand it off although this process does not
    /// hold it (it was asked for while still on its way here, or an earlier process with this id
    /// held it): nobody would release it until it expired.
    pub(super) async fn let_go_unheld(&self, lease: &Lease) {
        if lease.checkpoint_owner.as_deref() != Some(self.worker_id.as_str())
            || self.held_keys().contains(&lease.key)
        {
            return;
        }
        match self.store.release(lease).await {
            Ok(_) => {
                tracing::info!(worker = %self.worker_id, lease = %lease.key, to = ?lease.owner, "released a lease asked of this worker, which was not processing it")
            }
            Err(e) => {
                tracing::debug!(worker = %self.worker_id, lease = %lease.key, error = %e, "releasing a lease asked of this worker failed; it expires instead")
            }
        }
    }

    pub(super) fn stop_awaiting(&self, key: &str) {
        self.awaiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}
