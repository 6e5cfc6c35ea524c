//! One taking round: the table listed once, the taker's plan carried out up to 16 takes at a
//! time, and cut short when a whole batch of takes loses to other workers (many workers taking
//! at once, at a cold start or after crashes): the rest waits for the next round, planned on a
//! fresh listing.

use std::sync::Arc;

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::LeaseCoordinator;
use crate::checkpoint::HeldLease;
use crate::leases::{Lease, LeaseError, LeaseStore};

/// Takes in flight at once.
const CONCURRENT_TAKES: usize = 16;

impl LeaseCoordinator {
    /// One taking round: lists the table, takes and steals what the taker plans. Returns the
    /// leases newly held.
    pub(crate) async fn take_round(&self) -> Result<Vec<Arc<HeldLease>>, LeaseError> {
        let leases = self.store.list().await?;
        let held = self.held_keys();
        let plan = self.taker.lock().await.plan(&leases, &held, Instant::now());
        tracing::debug!(worker = %self.worker_id, leases = leases.len(), held = held.len(), take = plan.take.len(), steal = plan.steal.len(), "take round");
        let attempts: Vec<(Lease, bool)> = plan
            .take
            .into_iter()
            .map(|l| (l, false))
            .chain(plan.steal.into_iter().map(|l| (l, true)))
            .collect();
        let (mut taken, mut tried) = (Vec::new(), 0);
        for chunk in attempts.chunks(CONCURRENT_TAKES) {
            let mut lost = 0;
            let mut taking = JoinSet::new();
            for (lease, stolen) in chunk.iter().cloned() {
                let (store, me) = (self.store.clone(), self.worker_id.clone());
                taking.spawn(async move {
                    let result = take_one(&*store, &lease, stolen, &me).await;
                    (lease, stolen, result)
                });
            }
            while let Some(done) = taking.join_next().await {
                let (lease, stolen, result) = match done {
                    Ok(done) => done,
                    Err(e) => std::panic::resume_unwind(e.into_panic()),
                };
                tried += 1;
                match result {
                    Ok(mine) => {
                        tracing::info!(worker = %self.worker_id, lease = %mine.key, stolen, previous = ?lease.owner, "took lease");
                        let held = HeldLease::new(mine);
                        self.held
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(held.key.clone(), held.clone());
                        taken.push(held);
                    }
                    // Another worker was faster, or the owner renewed: fine, next round.
                    Err(e) if e.is_conflict() => {
                        lost += 1;
                        tracing::debug!(worker = %self.worker_id, lease = %lease.key, stolen, error = %e, "lease changed before it could be taken");
                    }
                    // A missing table stops the worker: the caller must hear of it.
                    Err(e @ LeaseError::TableNotFound { .. }) => return Err(e),
                    Err(e) => tracing::warn!(lease = %lease.key, error = %e, "taking lease failed"),
                }
            }
            if lost == chunk.len() && tried < attempts.len() {
                tracing::debug!(worker = %self.worker_id, tried, left = attempts.len() - tried, "a whole batch of takes lost to other workers: the rest waits for the next round");
                break;
            }
        }
        // Parents (lower shard ids) first, whatever order the takes landed in.
        taken.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(taken)
    }
}

/// One take. A steal races its live owner's renewals: the counter moving under the same owner
/// does not change the decision, so the steal is tried once more on what is stored. (Without
/// this, a taker whose rounds fall in step with the owner's renewals never steals.) An expired
/// lease whose counter moved is alive, and left alone.
async fn take_one(
    store: &dyn LeaseStore,
    lease: &Lease,
    stolen: bool,
    me: &str,
) -> Result<Lease, LeaseError> {
    let first = store.take(lease, me).await;
    match first {
        Err(LeaseError::Conflict {
            current: Some(current),
            ..
        }) if stolen && current.owner == lease.owner => store.take(&current, me).await,
        other => other,
    }
}
