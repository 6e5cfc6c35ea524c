//! The renewer: its own task, renewing every held lease at a fixed rate, concurrently (at most
//! [`MAX_CONCURRENT_RENEWALS`] calls at once), so renewals never wait behind a take round, a shard
//! sync, a table scan or a consumer's end, and a worker holding many leases still renews each
//! within the renew interval. Each renewal is one call with the store's timeout; the next tick is
//! its retry. There are no rounds: a lease whose renewal is still in flight at a tick (a slow call,
//! or one waiting behind that lease's own checkpoint) is skipped, and the others are renewed on
//! time.

use std::sync::Arc;
use std::time::Duration;

use std::collections::HashSet;

use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use super::LeaseCoordinator;
use crate::leases::LeaseError;

/// Renewal calls in flight at once, per worker.
pub(crate) const MAX_CONCURRENT_RENEWALS: usize = 32;

/// A running renewer; its task ends with an error only when the lease table is gone.
#[derive(Debug)]
pub(crate) struct Renewer {
    stop: CancellationToken,
    task: JoinHandle<Result<(), LeaseError>>,
}

impl Renewer {
    /// Starts renewing `coordinator`'s leases every `interval` (the first round at once).
    pub(crate) fn start(coordinator: Arc<LeaseCoordinator>, interval: Duration) -> Renewer {
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_RENEWALS));
            let mut renewing: HashSet<String> = HashSet::new();
            let mut renewals: JoinSet<(String, Result<(), LeaseError>)> = JoinSet::new();
            loop {
                tokio::select! {
                    biased;
                    () = token.cancelled() => {
                        // Let the renewals in flight land (each has the store's timeout).
                        while renewals.join_next().await.is_some() {}
                        return Ok(());
                    }
                    Some(done) = renewals.join_next(), if !renewals.is_empty() => match done {
                        Ok((key, Ok(()))) => {
                            renewing.remove(&key);
                        }
                        Ok((_, Err(e))) => return Err(e),
                        // A renewal cannot panic short of a bug; make it loud rather than lose
                        // the lease.
                        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                        Err(e) => unreachable!("renewals are never cancelled: {e}"),
                    },
                    _ = ticks.tick() => {
                        // Every held lease whose last renewal has finished gets a new one; one
                        // still in flight (a slow call, or waiting behind its own checkpoint) is
                        // skipped, and delays nobody else's.
                        for held in coordinator.held() {
                            if !renewing.insert(held.key.clone()) {
                                tracing::debug!(lease = %held.key, "the lease's last renewal is still in flight: none started at this tick");
                                continue;
                            }
                            let (coordinator, permits) = (coordinator.clone(), permits.clone());
                            renewals.spawn(async move {
                                let renewed = coordinator.renew(&held, Some(&permits)).await;
                                (held.key.clone(), renewed)
                            });
                        }
                    }
                }
            }
        });
        Renewer { stop, task }
    }

    /// Waits until the renewer ends by itself (only when the lease table is gone).
    pub(crate) async fn failed(&mut self) -> LeaseError {
        match (&mut self.task).await {
            Ok(Err(e)) => e,
            Ok(Ok(())) => std::future::pending().await,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// Stops the renewer and waits for the renewals in flight to land.
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        match self.task.await {
            Ok(_) => {}
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => {}
        }
    }

    /// Stops the renewer now (an immediate stop).
    pub(crate) fn abort(self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::taker::TakerConfig;
    use crate::leases::{CheckpointPosition, Lease, LeaseStore, MemoryLeaseStore};

    /// A store holding `keys`, and a coordinator for worker "w" holding them all.
    async fn holding(
        keys: &[String],
        failover: Duration,
    ) -> (Arc<MemoryLeaseStore>, Arc<LeaseCoordinator>) {
        let store = Arc::new(MemoryLeaseStore::new());
        for key in keys {
            let lease = Lease::new(key.clone(), CheckpointPosition::TrimHorizon);
            store.create_if_absent(&lease).await.unwrap();
        }
        let coordinator = Arc::new(LeaseCoordinator::new(
            store.clone(),
            TakerConfig {
                failover_time: failover,
                ..TakerConfig::test("w")
            },
        ));
        assert_eq!(coordinator.take_round().await.unwrap().len(), keys.len());
        (store, coordinator)
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_stuck_behind_its_lease_s_checkpoint_delays_no_other_lease() {
        let keys = ["a".to_owned(), "b".to_owned()];
        let (store, coordinator) = holding(&keys, Duration::from_secs(3)).await;
        let held = coordinator.held();
        let a = held.iter().find(|h| h.key == "a").unwrap().clone();
        // A's checkpoint holds its lease for 10 s (a store call that slow).
        let checkpointing = tokio::spawn(async move {
            let _lease = a.lease.lock().await;
            tokio::time::sleep(Duration::from_secs(10)).await;
        });
        tokio::task::yield_now().await;
        let renewer = Renewer::start(coordinator.clone(), Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(4_500)).await;
        let b = store.get("b").await.unwrap().unwrap();
        assert!(
            b.counter >= 6,
            "b renewed at every tick (0 to 4 s) while a waits: counter {}",
            b.counter
        );
        checkpointing.await.unwrap();
        renewer.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn many_slow_renewals_finish_within_one_interval() {
        let keys: Vec<String> = (0..64).map(|i| format!("s{i:02}")).collect();
        let (store, coordinator) = holding(&keys, Duration::from_secs(10)).await;
        // From now on every call, so every renewal, takes a second.
        store.set_latency(Duration::from_secs(1));
        let renewer = Renewer::start(coordinator.clone(), Duration::from_secs(3));
        // 64 renewals of 1 s each: one after another they would take 64 s; 32 at a time, 2 s.
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        store.set_latency(Duration::ZERO);
        let leases = store.list().await.unwrap();
        assert!(
            leases.iter().all(|l| l.counter == 2),
            "every lease renewed once: {:?}",
            leases.iter().map(|l| l.counter).collect::<Vec<_>>()
        );
        assert_eq!(coordinator.held_count(), 64, "none lost");
        renewer.stop().await;
    }
}
