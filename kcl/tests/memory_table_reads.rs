//! How often a worker reads the whole lease table, counted on the in-memory store under tokio's
//! paused clock: a multi-stream worker's shard sync lists the table once a round for all its
//! streams, so it Scans no more than a single-stream worker does once both are running.

use std::sync::Arc;
use std::time::Duration;

mod common;

use async_trait::async_trait;
use kcl::leases::MemoryLeaseStore;
use kcl::{
    Checkpointer, ProcessRecordsInput, ProcessorResult, RecordProcessor, StreamSpec, Worker,
};
use kinesis_api::memory::MemoryKinesis;

struct Idle;

#[async_trait]
impl RecordProcessor for Idle {
    async fn process_records(&mut self, _input: ProcessRecordsInput<'_>) -> ProcessorResult {
        Ok(())
    }

    async fn shard_ended(&mut self, checkpointer: &Checkpointer) -> ProcessorResult {
        checkpointer.checkpoint().await?;
        Ok(())
    }
}

const SYNC_INTERVAL: Duration = Duration::from_secs(5);
const RUN_FOR: Duration = Duration::from_secs(120);

/// The Scans (and all calls) a worker reading `streams` streams of 2 shards makes in `RUN_FOR`
/// of simulated time after it has taken its leases.
async fn scans_while_running(streams: usize) -> u64 {
    let kinesis = Arc::new(MemoryKinesis::with_seed(1));
    let names: Vec<String> = (0..streams).map(|i| format!("s{i}")).collect();
    for name in &names {
        kinesis.create_stream(name, 2);
    }
    let store = Arc::new(MemoryLeaseStore::new());
    let worker = Worker::builder()
        .kinesis(kinesis.clone())
        .lease_store(store.clone())
        .streams(names.iter().map(StreamSpec::new).collect::<Vec<_>>())
        .processor_factory(|_: &str| -> Box<dyn RecordProcessor> { Box::new(Idle) })
        .config(
            common::quick_config()
                .take_interval(Duration::from_secs(2))
                .shard_sync_interval(SYNC_INTERVAL),
        )
        .build()
        .unwrap();
    let status = worker.status_handle();
    let stop = worker.shutdown_handle();
    let task = tokio::spawn(worker.run());
    for _ in 0..600 {
        if status.snapshot().shards.len() == 2 * streams {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status.snapshot().shards.len(), 2 * streams, "leases taken");
    let before = store.calls("memory Scan");
    tokio::time::sleep(RUN_FOR).await;
    let scans = store.calls("memory Scan") - before;
    stop.shutdown();
    task.await.unwrap().unwrap();
    scans
}

#[tokio::test(start_paused = true)]
async fn a_multi_stream_worker_scans_the_table_once_per_shard_sync_round_not_once_per_stream() {
    let one = scans_while_running(1).await;
    let four = scans_while_running(4).await;
    let rounds = (RUN_FOR.as_secs() / SYNC_INTERVAL.as_secs()) as i64;
    // One Scan per take round (every 2 s) plus one per shard sync round, whatever the number
    // of streams; one per stream and round would add 3 × 24 = 72.
    assert!(
        (four as i64 - one as i64).abs() <= 2,
        "4 streams: {four} Scans in {RUN_FOR:?}; 1 stream: {one} (shard sync rounds: {rounds})"
    );
    assert!(
        one <= (RUN_FOR.as_secs() / 2) + rounds as u64 + 2,
        "1 stream: {one} Scans in {RUN_FOR:?}"
    );
}
