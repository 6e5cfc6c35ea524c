//! The lease coordinator: renews the leases this worker holds, takes expired ones and steals
//! toward balance. A lease whose renewal finds it changed (taken by another worker), or that could
//! not be renewed for the failover time, is marked lost; its shard's processor then gets
//! `lease_lost` within one renew interval.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::held::HeldLease;
use crate::leases::{Lease, LeaseError, LeaseStore};

// Used by the coordinator below; also tested on their own.
mod handoff;
pub(crate) mod renewer;
mod take_round;
pub(crate) mod taker;

use taker::{LeaseTaker, TakerConfig};

/// Renews, takes and releases leases for one worker.
#[derive(Debug)]
pub(crate) struct LeaseCoordinator {
    store: Arc<dyn LeaseStore>,
    worker_id: String,
    failover_time: Duration,
    held: Mutex<BTreeMap<String, Arc<HeldLease>>>,
    taker: tokio::sync::Mutex<LeaseTaker>,
    /// Whether steals are graceful hand-offs (else they take the lease at once, as KCL 2.x).
    graceful_steals: bool,
    /// How long a hand-off away from this worker may wait for its processor.
    handoff_timeout: Duration,
    /// Leases handed off to this worker, waiting for their old owner to release them.
    awaiting: Mutex<BTreeMap<String, handoff::Awaiting>>,
    /// Which leases this worker takes (a multi-stream worker: those of the streams it reads).
    filter: LeaseFilter,
}

/// Which leases a worker takes; the others are left out of its plans as if absent.
#[derive(Clone)]
pub(crate) struct LeaseFilter(Option<Accepts>);

/// Whether a worker takes a lease.
pub(crate) type Accepts = Arc<dyn Fn(&Lease) -> bool + Send + Sync>;

impl LeaseFilter {
    pub(crate) fn accepts(&self, lease: &Lease) -> bool {
        self.0.as_ref().is_none_or(|f| f(lease))
    }
}

impl std::fmt::Debug for LeaseFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "some leases"
        } else {
            "every lease"
        })
    }
}

impl LeaseCoordinator {
    pub(crate) fn new(store: Arc<dyn LeaseStore>, config: TakerConfig) -> Self {
        LeaseCoordinator {
            store,
            worker_id: config.worker_id.clone(),
            failover_time: config.failover_time,
            held: Mutex::new(BTreeMap::new()),
            graceful_steals: config.graceful_steals,
            handoff_timeout: config.handoff_timeout,
            taker: tokio::sync::Mutex::new(LeaseTaker::new(config)),
            awaiting: Mutex::new(BTreeMap::new()),
            filter: LeaseFilter(None),
        }
    }

    /// The same, taking only the leases `filter` accepts.
    pub(crate) fn with_filter(mut self, filter: Accepts) -> Self {
        self.filter = LeaseFilter(Some(filter));
        self
    }

    pub(crate) fn held(&self) -> Vec<Arc<HeldLease>> {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The keys of the leases this worker holds.
    pub(crate) fn held_keys(&self) -> std::collections::HashSet<String> {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// At start: takes back the unfinished leases the table shows owned by this worker's id
    /// (an earlier process with the same id was killed holding them), without waiting for them to
    /// expire. Each take is conditional on the counter, so a live process renewing them wins.
    pub(crate) async fn resume_own(&self) -> Result<Vec<Arc<HeldLease>>, LeaseError> {
        // Through the lease owner index where there is one (a lease taken a moment before the
        // restart may be missing from it: it expires and is taken like any other).
        let leases = match self.store.owned_by(&self.worker_id).await {
            Ok(Some(leases)) => leases,
            Ok(None) => self.store.list().await?,
            Err(e @ LeaseError::TableNotFound { .. }) => return Err(e),
            Err(e) => {
                tracing::info!(worker = %self.worker_id, error = %e, "reading this worker's leases through the lease owner index failed; scanning the table instead");
                self.store.list().await?
            }
        };
        let mut resumed = Vec::new();
        for lease in leases {
            // Not this worker's to take (a stream it does not read): it expires, or the worker
            // that still asks for it is answered by `let_go_unheld`.
            if lease.is_finished() || !self.filter.accepts(&lease) {
                continue;
            }
            // Handed to this id by a worker still processing it: wait for its release.
            if lease.is_handing_off()
                && lease.owner.as_deref() == Some(self.worker_id.as_str())
                && lease.actual_owner() != Some(self.worker_id.as_str())
            {
                self.await_handoff(&lease, None);
                continue;
            }
            if lease.actual_owner() != Some(self.worker_id.as_str()) {
                continue;
            }
            match self.store.take(&lease, &self.worker_id).await {
                Ok(mine) => {
                    tracing::info!(worker = %self.worker_id, lease = %mine.key, "resumed a lease this worker id held before a restart");
                    resumed.push(self.hold(mine));
                }
                Err(e) if e.is_conflict() => {
                    tracing::warn!(worker = %self.worker_id, lease = %lease.key, "a lease owned by this worker id changed while resuming it: is another process using the same worker id?");
                }
                Err(e @ LeaseError::TableNotFound { .. }) => return Err(e),
                // Not the others: the leases resumed so far are held now, and must reach the
                // caller (their consumers start from it). This one expires and is taken later.
                Err(e) => {
                    tracing::warn!(worker = %self.worker_id, lease = %lease.key, error = %e, "resuming a lease this worker id held failed; it is taken once it expires");
                }
            }
        }
        Ok(resumed)
    }

    /// Starts tracking a lease just taken.
    fn hold(&self, lease: crate::leases::Lease) -> Arc<HeldLease> {
        self.stop_awaiting(&lease.key);
        let held = HeldLease::new(lease);
        let (replaced, count) = {
            let mut map = self.held.lock().unwrap_or_else(|e| e.into_inner());
            (map.insert(held.key.clone(), held.clone()), map.len())
        };
        crate::kcl_metrics::current_leases(count);
        // Taken again before a renewal noticed that another worker had it meanwhile: the old
        // hold's processor must stop (the new hold gets its own), or two would run side by side.
        if let Some(old) = replaced
            && !old.lost.is_cancelled()
        {
            tracing::info!(worker = %self.worker_id, lease = %held.key, "lease taken again after another worker held it: the earlier hold's processor stops");
            crate::kcl_metrics::lost();
            old.lost.cancel();
        }
        held
    }

    /// How many leases this worker holds.
    pub(crate) fn held_count(&self) -> usize {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Stops tracking `held`, and only it: a later hold of the same key (the lease lost, then
    /// taken again while an old renewal was still in flight) stays.
    fn forget(&self, held: &HeldLease) {
        let mut map = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if map
            .get(&held.key)
            .is_some_and(|current| std::ptr::eq(&**current, held))
        {
            map.remove(&held.key);
            crate::kcl_metrics::current_leases(map.len());
        }
    }

    /// One renewal round over every held lease, one after another (the worker's renewer runs
    /// them concurrently instead). Fails only when the lease table is gone.
    #[cfg(test)]
    pub(crate) async fn renew_all(&self) -> Result<(), LeaseError> {
        for held in self.held() {
            self.renew(&held, None).await?;
        }
        Ok(())
    }

    /// Renews one held lease. A lease found taken or deleted is lost at once; one that could not
    /// be renewed for the failover time is given up (others may consider it expired). Fails
    /// only when the lease table is gone.
    /// `permits` bounds the store calls in flight (taken once the lease is ours to renew, so a
    /// renewal waiting behind its lease's checkpoint holds none).
    pub(crate) async fn renew(
        &self,
        held: &HeldLease,
        permits: Option<&tokio::sync::Semaphore>,
    ) -> Result<(), LeaseError> {
        if held.lost.is_cancelled() {
            self.forget(held);
            return Ok(());
        }
        let mut lease = held.lease.lock().await;
        let _permit = match permits {
            Some(p) => Some(p.acquire().await.expect("never closed")),
            None => None,
        };
        // The throughput written with the renewal, smoothed over about three failover times:
        // a shard's reads come in bursts, and a measure of one renew interval swings by half
        // either way (seen: 165 to 603 KiB/s for a steady 400), enough to move leases to and fro.
        // This worker's first measures are averaged plainly with the stored value (each weighs
        // as much as all before it), so a fresh lease's partial first interval does not linger.
        if let Some((measured, over, measures)) = held.take_throughput() {
            let failover = self.failover_time.as_secs_f64();
            let decay = 1.0 - (-over.as_secs_f64() / (3.0 * failover)).exp();
            let smoothed = match lease.throughput_kbps {
                None => measured,
                Some(before) => {
                    let weight = decay.max(1.0 / (f64::from(measures) + 1.0));
                    before + weight * (measured - before)
                }
            };
            lease.throughput_kbps = Some(smoothed);
        }
        match self.store.renew(&lease).await {
            Ok(renewed) => {
                tracing::trace!(worker = %self.worker_id, lease = %held.key, counter = renewed.counter, "lease renewed");
                self.notice_handoff(held, &renewed);
                *lease = renewed;
                *held.last_renewed.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
                drop(lease);
                self.enforce_handoff_timeout(held).await;
            }
            Err(e @ (LeaseError::Conflict { .. } | LeaseError::NotFound { .. })) => {
                tracing::info!(worker = %self.worker_id, lease = %held.key, error = %e, "lease lost");
                crate::kcl_metrics::lost();
                held.lost.cancel();
                self.forget(held);
            }
            Err(e @ LeaseError::TableNotFound { .. }) => return Err(e),
            Err(e) => {
                let since = held
                    .last_renewed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .elapsed();
                tracing::warn!(lease = %held.key, error = %e, unrenewed_for = ?since, "lease renewal failed");
                if since > self.failover_time {
                    // Others may already consider it expired: stop before they take it.
                    tracing::warn!(lease = %held.key, "lease given up: not renewed for the failover time");
                    crate::kcl_metrics::lost();
                    held.lost.cancel();
                    self.forget(held);
                }
            }
        }
        Ok(())
    }

    /// Gives a lease back (graceful shutdown, or a finished shard): owner cleared, so any worker
    /// may take it at once instead of waiting for the failover time.
    pub(crate) async fn release(&self, held: &HeldLease) {
        self.forget(held);
        let lease = held.lease.lock().await;
        if let Err(e) = self.store.release(&lease).await {
            tracing::info!(lease = %held.key, error = %e, "release found the lease changed");
        }
        held.lost.cancel();
    }

    /// Marks every held lease lost (the lease table is gone): processors get `lease_lost`.
    pub(crate) fn lose_all(&self) {
        let held: Vec<Arc<HeldLease>> =
            std::mem::take(&mut *self.held.lock().unwrap_or_else(|e| e.into_inner()))
                .into_values()
                .collect();
        crate::kcl_metrics::current_leases(0);
        for h in held {
            crate::kcl_metrics::lost();
            h.lost.cancel();
        }
    }

    /// Stops tracking a lease whose processor is gone without releasing it.
    pub(crate) fn drop_lease(&self, held: &HeldLease) {
        self.forget(held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leases::{CheckpointPosition, Lease, MemoryLeaseStore};

    fn coordinator(store: Arc<MemoryLeaseStore>, me: &str) -> LeaseCoordinator {
        LeaseCoordinator::new(store, TakerConfig::test(me))
    }

    /// A table with lease "s0", taken by worker "a".
    async fn one_lease_held_by_a() -> (Arc<MemoryLeaseStore>, LeaseCoordinator, Vec<Arc<HeldLease>>)
    {
        let store = Arc::new(MemoryLeaseStore::new());
        let lease = Lease::new("s0", CheckpointPosition::TrimHorizon);
        store.create_if_absent(&lease).await.unwrap();
        let a = coordinator(store.clone(), "a");
        let held = a.take_round().await.unwrap();
        (store, a, held)
    }

    /// Seen in the fleet simulation (seed 547): "b" stole the lease and released it at shutdown
    /// before "a" renewed, and "a" took it again; the first hold's processor went on beside the
    /// new one's for 11.6 s, until a checkpoint found the lease changed.
    #[tokio::test(start_paused = true)]
    async fn taking_a_lease_again_stops_the_earlier_hold() {
        let (store, a, held) = one_lease_held_by_a().await;
        let first = held[0].clone();
        let current = store.get("s0").await.unwrap().unwrap();
        let stolen = store.take(&current, "b").await.unwrap();
        store.release(&stolen).await.unwrap();
        let again = a.take_round().await.unwrap();
        assert_eq!(again.len(), 1, "taken again");
        assert!(
            first.lost.is_cancelled(),
            "the earlier hold's processor is told the lease was lost"
        );
        assert!(!again[0].lost.is_cancelled());
        assert_eq!(a.held_count(), 1);
    }

    /// Seen in the fleet simulation (seed 615): resuming failed on one lease after taking
    /// others, and the start-up retried; the leases taken by the failed attempt stayed held with
    /// no processor (renewed, so nobody else took them), one until its hand-off timed out.
    #[tokio::test(start_paused = true)]
    async fn resuming_returns_every_lease_it_took_even_when_one_fails() {
        let store = Arc::new(MemoryLeaseStore::new());
        for key in ["s0", "s1"] {
            let mut lease = Lease::new(key, CheckpointPosition::TrimHorizon);
            lease.owner = Some("a".into());
            store.create_if_absent(&lease).await.unwrap();
        }
        store.set_latency(Duration::from_millis(10));
        // s1 disappears after the listing (10 ms) and s0's take (20 ms), before its own take.
        let deleting = tokio::spawn({
            let store = store.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(25)).await;
                store.set_latency(Duration::ZERO);
                store.delete("s1").await.unwrap();
            }
        });
        let a = coordinator(store.clone(), "a");
        let resumed = a
            .resume_own()
            .await
            .expect("one lease's failure is not the start-up's");
        deleting.await.unwrap();
        let keys: Vec<&str> = resumed.iter().map(|h| h.key.as_str()).collect();
        assert_eq!(keys, ["s0"]);
        assert_eq!(a.held_count(), 1, "nothing held without being returned");
    }

    /// Seen in the fleet simulation (seeds 558 and 615): a lease on its way to "a" was asked of
    /// "a" by "b" before "a" held it; nobody released it, and "b" waited a failover time.
    #[tokio::test(start_paused = true)]
    async fn a_lease_asked_of_a_worker_that_does_not_hold_it_is_released_at_once() {
        let store = Arc::new(MemoryLeaseStore::new());
        let mut lease = Lease::new("s0", CheckpointPosition::TrimHorizon);
        lease.owner = Some("a".into());
        store.create_if_absent(&lease).await.unwrap();
        store.hand_off(&lease, "b").await.unwrap();
        let a = coordinator(store.clone(), "a");
        a.take_round().await.unwrap();
        let now = store.get("s0").await.unwrap().unwrap();
        assert_eq!(
            (now.owner.as_deref(), now.checkpoint_owner.as_deref()),
            (Some("b"), None),
            "released to b"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_that_finds_the_lease_taken_marks_it_lost() {
        let (store, a, held) = one_lease_held_by_a().await;
        assert_eq!(held.len(), 1);
        a.renew_all().await.unwrap();
        assert!(
            !held[0].lost.is_cancelled(),
            "renewal of an untouched lease succeeds"
        );
        assert_eq!(store.get("s0").await.unwrap().unwrap().counter, 2);

        // Another worker takes it (as a steal would): the next renewal loses the condition.
        let current = store.get("s0").await.unwrap().unwrap();
        store.take(&current, "b").await.unwrap();
        a.renew_all().await.unwrap();
        assert!(
            held[0].lost.is_cancelled(),
            "the shard's consumer is told at once"
        );
        assert_eq!(a.held_count(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_renewal_of_an_old_hold_leaves_the_new_hold_alone() {
        let (store, a, old) = one_lease_held_by_a().await;
        // The old hold ends (its consumer saw a checkpoint conflict), and the lease comes back
        // free: `a` takes it again.
        old[0].lost.cancel();
        a.drop_lease(&old[0]);
        let current = store.get("s0").await.unwrap().unwrap();
        store.release(&current).await.unwrap();
        let new = a.take_round().await.unwrap();
        assert_eq!(new.len(), 1);
        // A renewal of the old hold, from a round that began before all this, runs late.
        a.renew(&old[0], None).await.unwrap();
        assert_eq!(a.held_count(), 1, "the new hold is still tracked");
        let counter = store.get("s0").await.unwrap().unwrap().counter;
        a.renew_all().await.unwrap();
        assert_eq!(
            store.get("s0").await.unwrap().unwrap().counter,
            counter + 1,
            "and still renewed"
        );
        assert!(!new[0].lost.is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn a_steal_survives_the_owner_renewing_between_the_listing_and_the_take() {
        let store = Arc::new(MemoryLeaseStore::new());
        for i in 0..4 {
            let mut lease = Lease::new(format!("s{i}"), CheckpointPosition::TrimHorizon);
            lease.owner = Some("b".into());
            store.create_if_absent(&lease).await.unwrap();
        }
        let a = coordinator(store.clone(), "a");
        let owned = store.list().await.unwrap();
        store.set_latency(Duration::from_millis(20));
        // b renews all its leases 5 ms into a's round: the renewals land after a's listing (at
        // 20 ms) and before a's take (at 40 ms).
        let renewing: Vec<_> = owned
            .into_iter()
            .map(|lease| {
                let store = store.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    store.renew(&lease).await.unwrap();
                })
            })
            .collect();
        let taken = a.take_round().await.unwrap();
        for r in renewing {
            r.await.unwrap();
        }
        assert_eq!(taken.len(), 1, "stolen despite the renewal");
    }

    #[tokio::test(start_paused = true)]
    async fn release_clears_the_owner_so_others_take_it_without_waiting() {
        let (store, a, held) = one_lease_held_by_a().await;
        a.release(&held[0]).await;
        assert_eq!(store.get("s0").await.unwrap().unwrap().owner, None);
        // b has never seen the lease before and its failover time has not passed: still takeable.
        let b = coordinator(store.clone(), "b");
        assert_eq!(b.take_round().await.unwrap().len(), 1);
    }
}
