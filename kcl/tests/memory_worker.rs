//! A worker on the in-memory Kinesis and lease store, under tokio's paused clock: every record is
//! delivered, in put order per key, across a split, in milliseconds of real time. The seed of the
//! fleet simulation.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use kcl::leases::MemoryLeaseStore;
use kcl::{
    Checkpointer, InitialPosition, ProcessRecordsInput, ProcessorResult, RecordProcessor, Worker,
    WorkerConfig,
};
use kinesis_api::memory::MemoryKinesis;
use kinesis_api::{Kinesis, PutEntry, ShardFilter, StreamRef};
use kinesis_format::HashKey;

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
    for i in from..from + n {
        // One record per call, in order: each key's records are stored in put order.
        let entry = PutEntry {
            partition_key: format!("key-{}", i % 50),
            explicit_hash_key: None,
            data: Bytes::from(i.to_string()),
        };
        kinesis
            .put_records(&StreamRef::new("s"), vec![entry])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn every_record_in_key_order_across_a_split() {
    let kinesis = Arc::new(MemoryKinesis::default());
    kinesis.create_stream("s", 4);
    let log: Log = Arc::default();
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
        .parent_poll_interval(Duration::from_millis(100));
    let worker = Worker::with_kinesis(
        kinesis.clone(),
        Arc::new(MemoryLeaseStore::new()),
        "s",
        factory,
        config,
    );
    let handle = worker.shutdown_handle();
    let task = tokio::spawn(worker.run());

    put(&kinesis, 0, 500).await;
    let shard = kinesis
        .list_shards(&StreamRef::new("s"), ShardFilter::Open)
        .await
        .unwrap()
        .remove(1);
    let middle = HashKey(shard.range.start.0 + (shard.range.end.0 - shard.range.start.0) / 2);
    kinesis.split_shard("s", &shard.id, middle).unwrap();
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
