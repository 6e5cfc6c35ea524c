//! The renewer: its own task, renewing every held lease at a fixed rate, concurrently (at most
//! [`MAX_CONCURRENT_RENEWALS`] calls at once), so renewals never wait behind a take round, a shard
//! sync, a table scan or a consumer's end, and a worker holding many leases still renews each
//! within the renew interval. Each renewal is one call with the store's timeout; the next round is
//! its retry.

use std::sync::Arc;
use std::time::Duration;

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
            // A slow round is followed by the next one at once, then the rate resumes.
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    () = token.cancelled() => return Ok(()),
                    _ = ticks.tick() => renew_round(&coordinator).await?,
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

    /// Stops the renewer and waits for its current round to end.
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

/// One round: every held lease renewed, at most [`MAX_CONCURRENT_RENEWALS`] at once.
async fn renew_round(coordinator: &Arc<LeaseCoordinator>) -> Result<(), LeaseError> {
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_RENEWALS));
    let mut renewals = JoinSet::new();
    for held in coordinator.held() {
        let (coordinator, permits) = (coordinator.clone(), permits.clone());
        renewals.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("never closed");
            coordinator.renew(&held).await
        });
    }
    let mut result = Ok(());
    while let Some(done) = renewals.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result = Err(e),
            // A renewal cannot panic short of a bug; make it loud rather than lose the lease.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => {}
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::taker::TakerConfig;
    use crate::leases::{CheckpointPosition, Lease, LeaseStore, MemoryLeaseStore};

    #[tokio::test(start_paused = true)]
    async fn many_slow_renewals_finish_within_one_interval() {
        let store = Arc::new(MemoryLeaseStore::new());
        for i in 0..64 {
            let lease = Lease::new(format!("s{i:02}"), CheckpointPosition::TrimHorizon);
            store.create_if_absent(&lease).await.unwrap();
        }
        let coordinator = Arc::new(LeaseCoordinator::new(
            store.clone(),
            TakerConfig {
                worker_id: "a".into(),
                failover_time: Duration::from_secs(10),
                max_leases_per_worker: usize::MAX,
                max_leases_to_steal: 1,
            },
        ));
        assert_eq!(coordinator.take_round().await.unwrap().len(), 64);
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
