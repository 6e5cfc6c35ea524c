//! A worker reading through enhanced fan-out on the in-memory Kinesis, under tokio's paused
//! clock: every record delivered in put order per key across a split, subscriptions renewed as
//! they end after five minutes, and a restart continuing from the checkpoint.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::{put_numbered, quick_config, split_in_half};
use kcl::leases::MemoryLeaseStore;
use kcl::{Checkpointer, ProcessRecordsInput, ProcessorResult, RecordProcessor, Worker};
use kinesis_api::memory::MemoryKinesis;
use kinesis_api::{
    AwsError, IteratorStart, Kinesis, PutEntry, PutResult, RecordsPage, Shard, ShardFilter,
    StreamConsumer, StreamRef, StreamSummary, Subscription,
};

/// The in-memory Kinesis, refusing every polling call: the worker must read by subscription.
#[derive(Debug)]
struct NoPolling(Arc<MemoryKinesis>);

#[async_trait]
impl Kinesis for NoPolling {
    async fn describe_stream_summary(&self, s: &StreamRef) -> Result<StreamSummary, AwsError> {
        self.0.describe_stream_summary(s).await
    }
    async fn list_shards(&self, s: &StreamRef, f: ShardFilter) -> Result<Vec<Shard>, AwsError> {
        self.0.list_shards(s, f).await
    }
    async fn get_shard_iterator(
        &self,
        _: &StreamRef,
        _: &str,
        _: &IteratorStart,
    ) -> Result<String, AwsError> {
        panic!("GetShardIterator while reading through enhanced fan-out")
    }
    async fn get_records(&self, _: &str, _: i32) -> Result<RecordsPage, AwsError> {
        panic!("GetRecords while reading through enhanced fan-out")
    }
    async fn put_records(
        &self,
        s: &StreamRef,
        entries: Vec<PutEntry>,
    ) -> Result<Vec<PutResult>, AwsError> {
        self.0.put_records(s, entries).await
    }
    async fn register_stream_consumer(
        &self,
        arn: &str,
        name: &str,
    ) -> Result<StreamConsumer, AwsError> {
        self.0.register_stream_consumer(arn, name).await
    }
    async fn describe_stream_consumer(
        &self,
        arn: &str,
        name: &str,
    ) -> Result<StreamConsumer, AwsError> {
        self.0.describe_stream_consumer(arn, name).await
    }
    async fn subscribe_to_shard(
        &self,
        arn: &str,
        shard: &str,
        start: &IteratorStart,
    ) -> Result<Box<dyn Subscription>, AwsError> {
        self.0.subscribe_to_shard(arn, shard, start).await
    }
}

type Log = Arc<Mutex<Vec<(String, usize)>>>;

struct Recorder(Log);

#[async_trait]
impl RecordProcessor for Recorder {
    async fn process_records(&mut self, input: ProcessRecordsInput<'_>) -> ProcessorResult {
        self.0.lock().unwrap().extend(input.records.iter().map(|r| {
            let i = String::from_utf8_lossy(&r.data).parse().unwrap();
            (r.partition_key.to_string(), i)
        }));
        input.checkpointer.checkpoint().await?;
        Ok(())
    }

    async fn shard_ended(&mut self, checkpointer: &Checkpointer) -> ProcessorResult {
        checkpointer.checkpoint().await?;
        Ok(())
    }
}

fn worker(kinesis: &Arc<MemoryKinesis>, store: &Arc<MemoryLeaseStore>, log: &Log) -> Worker {
    let log = log.clone();
    Worker::builder()
        .kinesis(Arc::new(NoPolling(kinesis.clone())))
        .lease_store(store.clone())
        .stream("s")
        .processor_factory(move |_: &str| -> Box<dyn RecordProcessor> {
            Box::new(Recorder(log.clone()))
        })
        .config(quick_config().enhanced_fan_out("app"))
        .build()
        .unwrap()
}

async fn wait_for(log: &Log, n: usize) {
    for _ in 0..1_200 {
        if log.lock().unwrap().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("only {} of {n} records", log.lock().unwrap().len());
}

/// Each of `0..n` exactly once, and per key in put order.
fn check(log: &Log, n: usize) {
    let log = log.lock().unwrap();
    let mut last = std::collections::HashMap::new();
    for (key, i) in log.iter() {
        if let Some(prev) = last.insert(key.as_str(), *i) {
            assert!(prev < *i, "{key}: {i} after {prev}");
        }
    }
    let mut all: Vec<usize> = log.iter().map(|(_, i)| *i).collect();
    all.sort_unstable();
    assert_eq!(all, (0..n).collect::<Vec<_>>(), "every record once");
}

#[tokio::test(start_paused = true)]
async fn every_record_in_key_order_across_a_split_and_renewed_subscriptions() {
    let kinesis = Arc::new(MemoryKinesis::with_seed(21));
    kinesis.create_stream("s", 2);
    let store = Arc::new(MemoryLeaseStore::new());
    let log: Log = Arc::default();
    let w = worker(&kinesis, &store, &log);
    let handle = w.shutdown_handle();
    let running = tokio::spawn(w.run());

    put_numbered(&kinesis, 0, 300, 50, Duration::from_millis(2)).await;
    split_in_half(&kinesis, 0).await;
    put_numbered(&kinesis, 300, 300, 50, Duration::from_millis(2)).await;
    wait_for(&log, 600).await;
    // Past the five-minute life of every subscription: they are renewed from the continuation.
    tokio::time::sleep(Duration::from_secs(330)).await;
    put_numbered(&kinesis, 600, 100, 50, Duration::from_millis(2)).await;
    wait_for(&log, 700).await;
    handle.shutdown();
    running.await.unwrap().unwrap();
    check(&log, 700);
}

#[tokio::test(start_paused = true)]
async fn a_restarted_worker_continues_from_the_checkpoint() {
    let kinesis = Arc::new(MemoryKinesis::with_seed(22));
    kinesis.create_stream("s", 2);
    let store = Arc::new(MemoryLeaseStore::new());
    let log: Log = Arc::default();
    let first = worker(&kinesis, &store, &log);
    let handle = first.shutdown_handle();
    let running = tokio::spawn(first.run());
    put_numbered(&kinesis, 0, 200, 50, Duration::from_millis(2)).await;
    wait_for(&log, 200).await;
    handle.shutdown();
    running.await.unwrap().unwrap();

    put_numbered(&kinesis, 200, 200, 50, Duration::from_millis(2)).await;
    let second = worker(&kinesis, &store, &log);
    let handle = second.shutdown_handle();
    let running = tokio::spawn(second.run());
    wait_for(&log, 400).await;
    handle.shutdown();
    running.await.unwrap().unwrap();
    check(&log, 400);
}
