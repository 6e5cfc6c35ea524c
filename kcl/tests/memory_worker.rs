//! A worker on the in-memory Kinesis and lease store, under tokio's paused clock: every record is
//! delivered, in put order per key, across a split, in milliseconds of real time. The seed of the
//! fleet simulation.

use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;

use async_trait::async_trait;
use common::{put_numbered, split_in_half};
use kcl::leases::MemoryLeaseStore;
use kcl::{
    Checkpointer, InitialPosition, ProcessRecordsInput, ProcessorResult, RecordProcessor, Worker,
    WorkerConfig,
};
use kinesis_api::memory::MemoryKinesis;

type Log = Arc<Mutex<Vec<(String, String)>>>;

struct Recorder(Log);

#[async_trait]
impl RecordProcessor for Recorder {
    async fn process_records(&mut self, input: ProcessRecordsInput<'_>) -> ProcessorResult {
        {
            let mut log = self.0.lock().unwrap();
            for r in &input.records {
                log.push((
                    r.partition_key.to_string(),
                    String::from_utf8_lossy(&r.data).into_owned(),
                ));
            }
        }
        input.checkpointer.checkpoint().await?;
        Ok(())
    }

    async fn shard_ended(&mut self, checkpointer: &Checkpointer) -> ProcessorResult {
        checkpointer.checkpoint().await?;
        Ok(())
    }
}

async fn put(kinesis: &MemoryKinesis, from: usize, n: usize) {
    put_numbered(kinesis, from, n, 50, Duration::from_millis(2)).await;
}

/// A worker on `kinesis` and `store`, recording into `log`.
fn worker(kinesis: Arc<MemoryKinesis>, store: Arc<MemoryLeaseStore>, log: &Log) -> Worker {
    let factory = {
        let log = log.clone();
        move |_: &str| -> Box<dyn RecordProcessor> { Box::new(Recorder(log.clone())) }
    };
    let config = WorkerConfig::default()
        .worker_id("w")
        .initial_position(InitialPosition::TrimHorizon)
        .failover_time(Duration::from_millis(1500))
        .take_interval(Duration::from_millis(200))
        .idle_time_between_reads(Duration::from_millis(200))
        .parent_poll_interval(Duration::from_millis(100))
        .failure_backoff(Duration::from_millis(100), Duration::from_secs(2));
    Worker::with_kinesis(kinesis, store, "s", factory, config)
}

/// Waits (on the paused clock) until `n` distinct records were delivered, or 60 s passed.
async fn wait_for(log: &Log, n: usize) {
    for _ in 0..600 {
        let distinct: std::collections::HashSet<String> =
            log.lock().unwrap().iter().map(|(_, d)| d.clone()).collect();
        if distinct.len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Per key, first deliveries in put order; returns how many distinct records were delivered.
fn check_first_deliveries_in_key_order(log: &Log) -> usize {
    let log = log.lock().unwrap();
    let mut seen = std::collections::HashSet::new();
    let mut last: std::collections::HashMap<&str, usize> = Default::default();
    for (key, data) in log.iter() {
        if !seen.insert(data.clone()) {
            continue;
        }
        let i: usize = data.parse().unwrap();
        if let Some(prev) = last.insert(key, i) {
            assert!(prev < i, "{key}: {i} first delivered after {prev}");
        }
    }
    seen.len()
}

#[tokio::test(start_paused = true)]
async fn faults_failures_and_a_lease_store_outage_lose_nothing() {
    let kinesis = Arc::new(MemoryKinesis::with_seed(11));
    kinesis.create_stream("s", 4);
    let store = Arc::new(MemoryLeaseStore::new());
    let log: Log = Arc::default();
    let w = worker(kinesis.clone(), store.clone(), &log);
    let handle = w.shutdown_handle();
    let task = tokio::spawn(w.run());
    put(&kinesis, 0, 300).await;
    kinesis.set_faults(kinesis_api::memory::Faults {
        internal_error: 0.05,
        throttle: 0.05,
        timeout: 0.02,
        timeout_after: Duration::from_secs(1),
    });
    store.set_failures(0.05, 3);
    put(&kinesis, 300, 150).await;
    // The lease table is unreachable for longer than the failover time: every lease is given
    // up, then taken again once it answers.
    store.set_outage(true);
    put(&kinesis, 450, 150).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    store.set_outage(false);
    wait_for(&log, 600).await;
    handle.shutdown();
    task.await.unwrap().unwrap();
    assert_eq!(
        check_first_deliveries_in_key_order(&log),
        600,
        "every record"
    );
}

#[tokio::test(start_paused = true)]
async fn every_record_in_key_order_across_a_split() {
    let kinesis = Arc::new(MemoryKinesis::default());
    kinesis.create_stream("s", 4);
    let log: Log = Arc::default();
    let worker = worker(kinesis.clone(), Arc::new(MemoryLeaseStore::new()), &log);
    let handle = worker.shutdown_handle();
    let task = tokio::spawn(worker.run());

    put(&kinesis, 0, 500).await;
    split_in_half(&kinesis, 1).await;
    put(&kinesis, 500, 500).await;

    for _ in 0..600 {
        if log.lock().unwrap().len() >= 1_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    handle.shutdown();
    task.await.unwrap().unwrap();

    let log = log.lock().unwrap();
    assert_eq!(log.len(), 1_000, "every record, once");
    // Per key, delivered in put order (parents before children).
    let mut last: std::collections::HashMap<&str, usize> = Default::default();
    for (key, data) in log.iter() {
        let i: usize = data.parse().unwrap();
        if let Some(prev) = last.insert(key, i) {
            assert!(prev < i, "{key}: {i} delivered after {prev}");
        }
    }
}
