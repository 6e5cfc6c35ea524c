//! An in-memory lease table for tests, with the same conditions as the DynamoDB one, and the
//! same knobs as the in-memory Kinesis: a latency per call, an outage switch, and seeded random
//! failures (each a transient store error; nothing is written).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use kinesis_retry::{AwsError, AwsErrorKind};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::lease::{CheckpointPosition, Lease};
use super::store::{LeaseError, LeaseStore};

/// What goes wrong with the in-memory store's calls.
#[derive(Debug)]
struct Trouble {
    latency: Duration,
    failure_rate: f64,
    outage: bool,
    rng: StdRng,
}

impl Default for Trouble {
    fn default() -> Self {
        Trouble {
            latency: Duration::ZERO,
            failure_rate: 0.0,
            outage: false,
            rng: StdRng::seed_from_u64(0),
        }
    }
}

/// Leases in a map behind a mutex.
#[derive(Debug, Default)]
pub struct MemoryLeaseStore {
    leases: Mutex<BTreeMap<String, Lease>>,
    /// Every stored checkpoint, in the order stored (held while storing, so the order is exact).
    checkpoints: Mutex<Vec<(String, CheckpointPosition)>>,
    trouble: Mutex<Trouble>,
    /// Calls made, by operation (as named in errors: "memory Scan", "memory PutItem"...).
    calls: Mutex<BTreeMap<&'static str, u64>>,
}

impl MemoryLeaseStore {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every call waits this long first (default none).
    pub fn set_latency(&self, latency: Duration) {
        self.trouble().latency = latency;
    }

    /// While on, every call fails as a lost connection (nothing written).
    pub fn set_outage(&self, outage: bool) {
        self.trouble().outage = outage;
    }

    /// This share of calls (0.0 to 1.0) fails with an HTTP 500 (nothing written), drawn from an
    /// RNG seeded with `seed`.
    pub fn set_failures(&self, failure_rate: f64, seed: u64) {
        let mut t = self.trouble();
        t.failure_rate = failure_rate;
        t.rng = StdRng::seed_from_u64(seed);
    }

    /// Every checkpoint stored so far, as (lease key, position), in the order the store wrote
    /// them: for tests that check checkpoints never move backwards.
    pub fn checkpoint_history(&self) -> Vec<(String, CheckpointPosition)> {
        self.checkpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every lease as stored now, by key, read past the latency, outage and failures: for tests
    /// that wait for a condition of the table.
    pub fn leases(&self) -> Vec<Lease> {
        self.leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// How many calls of `operation` were made so far (failed ones included), by the name its
    /// errors carry: "memory Scan" for [`list`](LeaseStore::list), "memory Query" for
    /// [`owned_by`](LeaseStore::owned_by), and so on. For tests that count the table's reads.
    pub fn calls(&self, operation: &str) -> u64 {
        let calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        calls.get(operation).copied().unwrap_or(0)
    }

    fn trouble(&self) -> std::sync::MutexGuard<'_, Trouble> {
        self.trouble.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The latency, the outage and the random failures, before a call.
    async fn enter(&self, operation: &'static str) -> Result<(), LeaseError> {
        *self
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(operation)
            .or_default() += 1;
        let latency = self.trouble().latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let kind = {
            let mut t = self.trouble();
            if t.outage {
                AwsErrorKind::Connection {
                    message: "in-memory lease store outage".into(),
                }
            } else if t.failure_rate > 0.0 && t.rng.random::<f64>() < t.failure_rate {
                AwsErrorKind::Service {
                    code: "InternalServerError".into(),
                    message: "injected failure".into(),
                    status: Some(500),
                }
            } else {
                return Ok(());
            }
        };
        Err(LeaseError::Store {
            source: AwsError::new(operation, kind),
        })
    }

    /// Applies `change` to the stored lease if `condition` holds for it.
    fn update(
        &self,
        key: &str,
        condition: impl FnOnce(&Lease) -> bool,
        change: impl FnOnce(&Lease) -> Lease,
    ) -> Result<Lease, LeaseError> {
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        let current = leases.get(key).ok_or_else(|| LeaseError::NotFound {
            key: key.to_owned(),
        })?;
        if !condition(current) {
            return Err(LeaseError::Conflict {
                key: key.to_owned(),
                current: Some(Box::new(current.clone())),
            });
        }
        let next = change(current);
        leases.insert(key.to_owned(), next.clone());
        Ok(next)
    }
}

#[async_trait]
impl LeaseStore for MemoryLeaseStore {
    async fn ensure_table(&self) -> Result<(), LeaseError> {
        self.enter("memory DescribeTable").await?;
        Ok(())
    }

    async fn list(&self) -> Result<Vec<Lease>, LeaseError> {
        self.enter("memory Scan").await?;
        Ok(self
            .leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect())
    }

    async fn owned_by(&self, owner: &str) -> Result<Option<Vec<Lease>>, LeaseError> {
        self.enter("memory Query").await?;
        Ok(Some(
            self.leases
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .filter(|l| l.owner.as_deref() == Some(owner))
                .cloned()
                .collect(),
        ))
    }

    async fn get(&self, key: &str) -> Result<Option<Lease>, LeaseError> {
        self.enter("memory GetItem").await?;
        Ok(self
            .leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned())
    }

    async fn create_if_absent(&self, lease: &Lease) -> Result<bool, LeaseError> {
        self.enter("memory PutItem").await?;
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        if leases.contains_key(&lease.key) {
            return Ok(false);
        }
        leases.insert(lease.key.clone(), lease.clone());
        Ok(true)
    }

    async fn renew(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        self.enter("memory UpdateItem").await?;
        self.update(
            &lease.key,
            |c| c.counter == lease.counter,
            |c| Lease {
                throughput_kbps: lease.throughput_kbps.or(c.throughput_kbps),
                ..c.renewed()
            },
        )
    }

    async fn take(&self, lease: &Lease, owner: &str) -> Result<Lease, LeaseError> {
        self.enter("memory UpdateItem").await?;
        self.update(
            &lease.key,
            |c| c.counter == lease.counter,
            |c| c.taken_by(owner),
        )
    }

    async fn release(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        self.enter("memory UpdateItem").await?;
        self.update(
            &lease.key,
            |c| c.actual_owner() == lease.actual_owner(),
            Lease::released,
        )
    }

    async fn hand_off(&self, lease: &Lease, new_owner: &str) -> Result<Lease, LeaseError> {
        self.enter("memory UpdateItem").await?;
        self.update(
            &lease.key,
            |c| lease.owner.is_some() && c.owner == lease.owner && !c.is_handing_off(),
            |c| c.handed_off_to(new_owner),
        )
    }

    async fn checkpoint(
        &self,
        lease: &Lease,
        checkpoint: &CheckpointPosition,
        pending: Option<&CheckpointPosition>,
    ) -> Result<Lease, LeaseError> {
        self.enter("memory UpdateItem").await?;
        let mut history = self.checkpoints.lock().unwrap_or_else(|e| e.into_inner());
        let written = self.update(
            &lease.key,
            |c| c.counter == lease.counter && c.actual_owner() == lease.actual_owner(),
            |c| c.checkpointed(checkpoint, pending),
        )?;
        history.push((written.key.clone(), written.checkpoint.clone()));
        Ok(written)
    }

    async fn set_child_shards(
        &self,
        lease: &Lease,
        children: &[String],
    ) -> Result<Lease, LeaseError> {
        self.enter("memory UpdateItem").await?;
        self.update(
            &lease.key,
            |c| c.actual_owner() == lease.actual_owner(),
            |c| Lease {
                child_shard_ids: children.to_vec(),
                ..c.clone()
            },
        )
    }

    async fn delete(&self, key: &str) -> Result<(), LeaseError> {
        self.enter("memory DeleteItem").await?;
        self.leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conditions_hold_like_the_lease_table() {
        let store = MemoryLeaseStore::new();
        let lease = Lease::new("shardId-0", CheckpointPosition::TrimHorizon);
        assert!(store.create_if_absent(&lease).await.unwrap());
        assert!(!store.create_if_absent(&lease).await.unwrap());

        let mine = store.take(&lease, "a").await.unwrap();
        assert_eq!((mine.owner.as_deref(), mine.counter), (Some("a"), 1));
        // A second taker with the stale counter loses and learns who holds it.
        let err = store.take(&lease, "b").await.unwrap_err();
        match err {
            LeaseError::Conflict {
                current: Some(c), ..
            } => assert_eq!(c.owner.as_deref(), Some("a")),
            other => panic!("{other:?}"),
        }
        let renewed = store.renew(&mine).await.unwrap();
        assert_eq!(renewed.counter, 2);
        // The stale copy can no longer checkpoint: the counter moved.
        assert!(
            store
                .checkpoint(&mine, &CheckpointPosition::ShardEnd, None)
                .await
                .unwrap_err()
                .is_conflict()
        );
        let done = store
            .checkpoint(&renewed, &CheckpointPosition::ShardEnd, None)
            .await
            .unwrap();
        assert!(done.is_finished());
        let stolen = store.take(&done, "b").await.unwrap();
        assert_eq!(stolen.owner_switches_since_checkpoint, 1);
        // The old owner can no longer release it.
        assert!(store.release(&done).await.unwrap_err().is_conflict());
        let released = store.release(&stolen).await.unwrap();
        assert_eq!(released.owner, None);
    }
}
