//! A recording processor for the consumer tests: every delivered record goes into a shared log,
//! and tests await conditions on the log instead of sleeping.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use kcl::{
    Checkpointer, ConsumerRecord, InitialPosition, ProcessRecordsInput, RecordProcessor,
    WorkerConfig,
};
use tokio::sync::Notify;

/// The failover time of [`test_worker_config`].
pub const TEST_FAILOVER: Duration = Duration::from_millis(1500);
/// The take interval of [`test_worker_config`].
pub const TEST_TAKE_INTERVAL: Duration = Duration::from_millis(200);

/// A worker configuration with test timings: failover 1.5 s (renewal every 0.5 s), taking every
/// 200 ms, GetRecords every 50 ms when caught up, parents checked every 100 ms.
pub fn test_worker_config(worker: &str, position: InitialPosition) -> WorkerConfig {
    WorkerConfig::default()
        .worker_id(worker)
        .initial_position(position)
        .failover_time(TEST_FAILOVER)
        .take_interval(TEST_TAKE_INTERVAL)
        .idle_time_between_reads(Duration::from_millis(50))
        .parent_poll_interval(Duration::from_millis(100))
}

/// What processors saw, shared across all shards of a worker (or of several workers).
#[derive(Clone, Debug, Default)]
pub struct DeliveryLog {
    inner: Arc<Mutex<Log>>,
    changed: Arc<Notify>,
}

/// The log's contents.
#[derive(Clone, Debug, Default)]
pub struct Log {
    /// (worker, shard, record) in delivery order.
    pub records: Vec<(String, String, ConsumerRecord)>,
    /// Shards whose processor got `shutdown_requested`.
    pub shutdown_requested: Vec<String>,
    /// Shards whose processor got `shard_ended`.
    pub shard_ended: Vec<String>,
    /// Shards whose processor got `lease_lost`.
    pub lease_lost: Vec<String>,
    /// Shards whose processor was initialised (reading has started).
    pub initialized: Vec<String>,
}

impl DeliveryLog {
    /// A copy of the log now.
    pub fn snapshot(&self) -> Log {
        self.inner.lock().expect("log lock").clone()
    }

    /// Waits until `condition` holds for the log, failing the test after `timeout`.
    pub async fn wait_for(&self, what: &str, timeout: Duration, condition: impl Fn(&Log) -> bool) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if condition(&self.inner.lock().expect("log lock")) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let log = self.snapshot();
                panic!(
                    "timed out after {timeout:?} waiting for {what}: {} records, shutdown {:?}, ended {:?}, lost {:?}",
                    log.records.len(),
                    log.shutdown_requested,
                    log.shard_ended,
                    log.lease_lost
                );
            }
        }
    }

    fn update(&self, f: impl FnOnce(&mut Log)) {
        f(&mut self.inner.lock().expect("log lock"));
        self.changed.notify_waiters();
    }

    /// A processor factory for `worker` that records into this log and checkpoints each batch.
    pub fn factory(
        &self,
        worker: &str,
    ) -> impl Fn(&str) -> Box<dyn RecordProcessor> + Send + Sync + 'static {
        let (log, worker) = (self.clone(), worker.to_owned());
        move |shard: &str| {
            Box::new(Recorder {
                log: log.clone(),
                worker: worker.clone(),
                shard: shard.to_owned(),
            }) as Box<dyn RecordProcessor>
        }
    }
}

struct Recorder {
    log: DeliveryLog,
    worker: String,
    shard: String,
}

#[async_trait]
impl RecordProcessor for Recorder {
    async fn process_records(&mut self, input: ProcessRecordsInput<'_>) -> kcl::ProcessorResult {
        let (worker, shard) = (self.worker.clone(), self.shard.clone());
        let records = input.records;
        let checkpoint = input.checkpointer.checkpoint().await;
        self.log.update(|log| {
            log.records.extend(
                records
                    .into_iter()
                    .map(|r| (worker.clone(), shard.clone(), r)),
            );
        });
        if let Err(e) = checkpoint {
            eprintln!("[{}] checkpoint of {} failed: {e}", self.worker, self.shard);
        }
        Ok(())
    }

    async fn initialize(&mut self, _input: kcl::InitializeInput) -> kcl::ProcessorResult {
        let shard = self.shard.clone();
        self.log.update(|log| log.initialized.push(shard));
        Ok(())
    }

    async fn lease_lost(&mut self) -> kcl::ProcessorResult {
        let shard = self.shard.clone();
        self.log.update(|log| log.lease_lost.push(shard));
        Ok(())
    }

    async fn shard_ended(&mut self, checkpointer: &Checkpointer) -> kcl::ProcessorResult {
        checkpointer
            .checkpoint()
            .await
            .expect("checkpoint SHARD_END");
        let shard = self.shard.clone();
        self.log.update(|log| log.shard_ended.push(shard));
        Ok(())
    }

    async fn shutdown_requested(&mut self, checkpointer: &Checkpointer) -> kcl::ProcessorResult {
        let _ = checkpointer.checkpoint().await;
        let shard = self.shard.clone();
        self.log.update(|log| log.shutdown_requested.push(shard));
        Ok(())
    }
}

/// Puts records `from..from + n` straight through PutRecords (no aggregation): partition key
/// `key-{i}`, data `record-{i}`.
pub async fn put_numbered(kinesis: &aws_sdk_kinesis::Client, stream: &str, from: usize, n: usize) {
    use aws_sdk_kinesis::primitives::Blob;
    use aws_sdk_kinesis::types::PutRecordsRequestEntry;
    let ids: Vec<usize> = (from..from + n).collect();
    for chunk in ids.chunks(500) {
        let entries: Vec<PutRecordsRequestEntry> = chunk
            .iter()
            .map(|i| {
                PutRecordsRequestEntry::builder()
                    .partition_key(format!("key-{i}"))
                    .data(Blob::new(format!("record-{i}")))
                    .build()
                    .expect("entry")
            })
            .collect();
        let out = kinesis
            .put_records()
            .stream_name(stream)
            .set_records(Some(entries))
            .send()
            .await
            .expect("PutRecords");
        assert_eq!(out.failed_record_count(), Some(0), "every record stored");
    }
}

impl Log {
    /// How many different records (by data) were delivered.
    pub fn distinct(&self) -> usize {
        self.records
            .iter()
            .map(|(_, _, r)| &r.data)
            .collect::<std::collections::HashSet<_>>()
            .len()
    }
}

/// Runs `worker` in a task; the task's result is `run`'s.
pub fn spawn_worker(
    worker: kcl::Worker,
) -> (
    kcl::ShutdownHandle,
    tokio::task::JoinHandle<Result<(), kcl::WorkerError>>,
) {
    let handle = worker.shutdown_handle();
    (handle, tokio::spawn(worker.run()))
}
