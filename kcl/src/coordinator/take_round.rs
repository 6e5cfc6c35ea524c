//! One taking round: the taker's plan carried out up to 16 takes at a time, planned again on a
//! fresh listing when other workers turn out to be taking too.

use std::sync::Arc;

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::LeaseCoordinator;
use crate::held::HeldLease;
use crate::leases::{Lease, LeaseError, LeaseStore};

/// Takes in flight at once.
const CONCURRENT_TAKES: usize = 16;

/// Plans per round at most (each after a listing).
const MAX_PLANS: usize = 32;

impl LeaseCoordinator {
    /// One taking round: lists the table, takes and steals what the taker plans. Returns the
    /// leases newly held.
    ///
    /// Takes go 16 at a time. When some of a batch lose to other workers, those workers are
    /// taking too (a cold start, crashes): the rest of the plan was made without knowing them, so
    /// the table is listed again and the plan redone (at most [`MAX_PLANS`] times a round). Each
    /// new plan counts the other takers as owners, so nobody takes more than a fair share.
    pub(crate) async fn take_round(&self) -> Result<Vec<Arc<HeldLease>>, LeaseError> {
        let mut taken = Vec::new();
        for plan_number in 0..MAX_PLANS {
            let mut leases = match self.store.list().await {
                Ok(leases) => leases,
                // Planning again failed: what was taken so far must still reach the caller
                // (its consumers start from it).
                Err(e) if plan_number > 0 && !matches!(e, LeaseError::TableNotFound { .. }) => {
                    tracing::warn!(worker = %self.worker_id, error = %e, "listing the leases to plan again failed; the rest waits for the next round");
                    break;
                }
                Err(e) => return Err(e),
            };
            if plan_number == 0 {
                for lease in &leases {
                    self.let_go_unheld(lease).await;
                }
            }
            leases.retain(|l| self.filter.accepts(l));
            // Leases on their way here count as held: they are this worker's share, and their
            // old owner's renewals are expected.
            let mut held = self.held_keys();
            held.extend(self.awaiting_keys());
            let plan = self.taker.lock().await.plan(&leases, &held, Instant::now());
            tracing::debug!(worker = %self.worker_id, leases = leases.len(), held = held.len(), take = plan.take.len(), steal = plan.steal.len(), "take round");
            let attempts: Vec<(Lease, bool)> = plan
                .take
                .into_iter()
                .map(|l| (l, false))
                .chain(plan.steal.into_iter().map(|l| (l, true)))
                .collect();
            if !self.carry_out(&attempts, &mut taken).await? {
                break;
            }
        }
        // Parents (lower shard ids) first, whatever order the takes landed in.
        taken.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(taken)
    }

    /// Takes `attempts`, a batch at a time, into `taken`; stops after a batch in which some take
    /// lost to another worker and returns `true` then (plan again).
    async fn carry_out(
        &self,
        attempts: &[(Lease, bool)],
        taken: &mut Vec<Arc<HeldLease>>,
    ) -> Result<bool, LeaseError> {
        for (done, chunk) in attempts.chunks(CONCURRENT_TAKES).enumerate() {
            let mut lost = 0;
            let mut taking = JoinSet::new();
            let hand_off = self.graceful_steals;
            for (lease, stolen) in chunk.iter().cloned() {
                let (store, me) = (self.store.clone(), self.worker_id.clone());
                taking.spawn(async move {
                    // A graceful steal asks the owner to hand the lease off; unlike a take it
                    // does not race the owner's renewals (the counter is not compared).
                    let result = if stolen && hand_off {
                        store.hand_off(&lease, &me).await.map(Taken::HandingOff)
                    } else {
                        take_one(&*store, &lease, stolen, &me)
                            .await
                            .map(Taken::Held)
                    };
                    (lease, stolen, result)
                });
            }
            while let Some(joined) = taking.join_next().await {
                let (lease, stolen, result) = match joined {
                    Ok(joined) => joined,
                    Err(e) => std::panic::resume_unwind(e.into_panic()),
                };
                match result {
                    Ok(Taken::Held(mine)) => {
                        tracing::info!(worker = %self.worker_id, lease = %mine.key, stolen, previous = ?lease.owner, "took lease");
                        crate::kcl_metrics::taken(stolen);
                        taken.push(self.hold(mine));
                    }
                    Ok(Taken::HandingOff(asked)) => {
                        tracing::info!(worker = %self.worker_id, lease = %asked.key, from = ?asked.checkpoint_owner, "asked for a lease (graceful hand-off): it starts here once its owner has checkpointed and released it");
                        // Its counter last moved when the taker last saw it move (an owner that
                        // died then is not given a further failover time).
                        let changed_at = self.taker.lock().await.last_change(&asked.key);
                        self.await_handoff(&asked, changed_at);
                    }
                    // Another worker was faster, or the owner renewed.
                    Err(e) if e.is_conflict() => {
                        lost += 1;
                        tracing::debug!(worker = %self.worker_id, lease = %lease.key, stolen, error = %e, "lease changed before it could be taken");
                    }
                    // A missing table stops the worker: the caller must hear of it.
                    Err(e @ LeaseError::TableNotFound { .. }) => return Err(e),
                    Err(e) => tracing::warn!(lease = %lease.key, error = %e, "taking lease failed"),
                }
            }
            let left = attempts
                .len()
                .saturating_sub(done * CONCURRENT_TAKES + chunk.len());
            if lost > 0 {
                tracing::debug!(worker = %self.worker_id, lost, left, "other workers are taking too: planning again");
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// What a take or steal got.
enum Taken {
    /// Held now.
    Held(Lease),
    /// Being handed off to this worker.
    HandingOff(Lease),
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
