//! What stands between one simulated worker and the shared in-memory services: a gate that
//! pauses every call of that worker (as a stopped process would, while its timers keep running),
//! and a journal entry for each lease-store answer the invariants need (takes, refused renewals).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use kcl::leases::{CheckpointPosition, Lease, LeaseError, LeaseStore};
use kinesis_api::{
    IteratorStart, Kinesis, PutEntry, PutResult, RecordsPage, Shard, ShardFilter, StreamRef,
    StreamSummary,
};
use kinesis_retry::AwsError;
use tokio::sync::Notify;

use super::journal::{Entry, Journal};

/// Open or shut; a shut gate holds every call that reaches it until it opens, and lets them go
/// in the order they arrived. (Built on `Notify`, not on a `watch` channel: a watch channel wakes
/// its waiters in an order drawn from the runtime's RNG, which would break exact replay.)
#[derive(Clone, Debug)]
pub struct Gate(Arc<(AtomicBool, Notify)>);

impl Default for Gate {
    fn default() -> Self {
        Gate(Arc::new((AtomicBool::new(true), Notify::new())))
    }
}

impl Gate {
    /// Shuts (`false`) or opens (`true`) the gate.
    pub fn set_open(&self, open: bool) {
        self.0.0.store(open, Ordering::SeqCst);
        if open {
            self.0.1.notify_waiters();
        }
    }

    /// Returns once the gate is open.
    pub async fn pass(&self) {
        loop {
            let opened = self.0.1.notified();
            if self.0.0.load(Ordering::SeqCst) {
                return;
            }
            opened.await;
        }
    }
}

/// Lease-store calls made through probes, all workers together.
#[derive(Debug, Default)]
pub struct StoreCalls {
    /// Every call.
    pub all: AtomicU64,
    /// Renewals that succeeded.
    pub renewed: AtomicU64,
}

/// One worker's view of the lease store.
#[derive(Debug)]
pub struct ProbedStore {
    /// The store itself.
    pub inner: Arc<dyn LeaseStore>,
    /// The worker's id.
    pub worker: String,
    /// Shut: every call waits.
    pub gate: Gate,
    /// Where takes and refused renewals go.
    pub journal: Journal,
    /// Counted here.
    pub calls: Arc<StoreCalls>,
}

impl ProbedStore {
    async fn enter(&self) {
        self.calls.all.fetch_add(1, Ordering::Relaxed);
        self.gate.pass().await;
    }
}

#[async_trait]
impl LeaseStore for ProbedStore {
    async fn ensure_table(&self) -> Result<(), LeaseError> {
        self.enter().await;
        self.inner.ensure_table().await
    }

    async fn list(&self) -> Result<Vec<Lease>, LeaseError> {
        self.enter().await;
        self.inner.list().await
    }

    async fn owned_by(&self, owner: &str) -> Result<Option<Vec<Lease>>, LeaseError> {
        self.enter().await;
        self.inner.owned_by(owner).await
    }

    async fn get(&self, key: &str) -> Result<Option<Lease>, LeaseError> {
        self.enter().await;
        self.inner.get(key).await
    }

    async fn create_if_absent(&self, lease: &Lease) -> Result<bool, LeaseError> {
        self.enter().await;
        self.inner.create_if_absent(lease).await
    }

    async fn renew(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        self.enter().await;
        let renewed = self.inner.renew(lease).await;
        if renewed.is_ok() {
            self.calls.renewed.fetch_add(1, Ordering::Relaxed);
        }
        if let Err(LeaseError::Conflict { .. }) = &renewed {
            self.journal.push(Entry::RenewRefused {
                worker: self.worker.clone(),
                shard: lease.key.clone(),
            });
        }
        renewed
    }

    async fn take(&self, lease: &Lease, owner: &str) -> Result<Lease, LeaseError> {
        self.enter().await;
        let taken = self.inner.take(lease, owner).await;
        if taken.is_ok() {
            self.journal.push(Entry::Took {
                worker: owner.to_owned(),
                shard: lease.key.clone(),
            });
        }
        taken
    }

    async fn release(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        self.enter().await;
        let released = self.inner.release(lease).await;
        if released.is_ok() && lease.is_handing_off() {
            self.journal.push(Entry::HandedOff {
                worker: self.worker.clone(),
                shard: lease.key.clone(),
            });
        }
        released
    }

    async fn hand_off(&self, lease: &Lease, new_owner: &str) -> Result<Lease, LeaseError> {
        self.enter().await;
        let asked = self.inner.hand_off(lease, new_owner).await;
        if asked.is_ok() {
            self.journal.push(Entry::AskedFor {
                worker: new_owner.to_owned(),
                shard: lease.key.clone(),
            });
        }
        asked
    }

    async fn checkpoint(
        &self,
        lease: &Lease,
        checkpoint: &CheckpointPosition,
        pending: Option<&CheckpointPosition>,
    ) -> Result<Lease, LeaseError> {
        self.enter().await;
        self.inner.checkpoint(lease, checkpoint, pending).await
    }

    async fn set_child_shards(
        &self,
        lease: &Lease,
        children: &[String],
    ) -> Result<Lease, LeaseError> {
        self.enter().await;
        self.inner.set_child_shards(lease, children).await
    }

    async fn delete(&self, key: &str) -> Result<(), LeaseError> {
        self.enter().await;
        self.inner.delete(key).await
    }
}

/// One worker's view of Kinesis.
#[derive(Debug)]
pub struct ProbedKinesis {
    pub(super) inner: Arc<dyn Kinesis>,
    pub(super) gate: Gate,
}

#[async_trait]
impl Kinesis for ProbedKinesis {
    async fn describe_stream_summary(&self, stream: &StreamRef) -> Result<StreamSummary, AwsError> {
        self.gate.pass().await;
        self.inner.describe_stream_summary(stream).await
    }

    async fn list_shards(
        &self,
        stream: &StreamRef,
        filter: ShardFilter,
    ) -> Result<Vec<Shard>, AwsError> {
        self.gate.pass().await;
        self.inner.list_shards(stream, filter).await
    }

    async fn get_shard_iterator(
        &self,
        stream: &StreamRef,
        shard_id: &str,
        start: &IteratorStart,
    ) -> Result<String, AwsError> {
        self.gate.pass().await;
        self.inner.get_shard_iterator(stream, shard_id, start).await
    }

    async fn get_records(&self, iterator: &str, limit: i32) -> Result<RecordsPage, AwsError> {
        self.gate.pass().await;
        self.inner.get_records(iterator, limit).await
    }

    async fn put_records(
        &self,
        stream: &StreamRef,
        entries: Vec<PutEntry>,
    ) -> Result<Vec<PutResult>, AwsError> {
        self.gate.pass().await;
        self.inner.put_records(stream, entries).await
    }

    async fn register_stream_consumer(
        &self,
        stream_arn: &str,
        name: &str,
    ) -> Result<kinesis_api::StreamConsumer, AwsError> {
        self.gate.pass().await;
        self.inner.register_stream_consumer(stream_arn, name).await
    }

    async fn describe_stream_consumer(
        &self,
        stream_arn: &str,
        name: &str,
    ) -> Result<kinesis_api::StreamConsumer, AwsError> {
        self.gate.pass().await;
        self.inner.describe_stream_consumer(stream_arn, name).await
    }

    async fn subscribe_to_shard(
        &self,
        consumer_arn: &str,
        shard_id: &str,
        start: &IteratorStart,
    ) -> Result<Box<dyn kinesis_api::Subscription>, AwsError> {
        self.gate.pass().await;
        let inner = self
            .inner
            .subscribe_to_shard(consumer_arn, shard_id, start)
            .await?;
        Ok(Box::new(GatedSubscription {
            inner,
            gate: self.gate.clone(),
        }))
    }
}

/// A subscription of a worker that may be paused: no event reaches it while it is.
#[derive(Debug)]
struct GatedSubscription {
    inner: Box<dyn kinesis_api::Subscription>,
    gate: Gate,
}

#[async_trait]
impl kinesis_api::Subscription for GatedSubscription {
    async fn next_event(&mut self) -> Option<Result<kinesis_api::SubscriptionEvent, AwsError>> {
        self.gate.pass().await;
        self.inner.next_event().await
    }
}
