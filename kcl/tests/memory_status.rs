//! `Worker::status_handle`: the worker's phase, and each held shard's phase, progress and lag,
//! read from outside while a worker runs on the in-memory Kinesis and lease store.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

mod common;

use async_trait::async_trait;
use common::{put_numbered, quick_config};
use kcl::leases::MemoryLeaseStore;
use kcl::{
    Checkpointer, ProcessRecordsInput, ProcessorResult, RecordProcessor, ShardPhase, StatusHandle,
    Worker, WorkerPhase,
};
use kinesis_api::memory::MemoryKinesis;

/// Fails its first batch once (across the worker), then checkpoints every batch.
struct FailOnce(Arc<AtomicBool>);

#[async_trait]
impl RecordProcessor for FailOnce {
    async fn process_records(&mut self, input: ProcessRecordsInput<'_>) -> ProcessorResult {
        if !self.0.swap(true, Ordering::SeqCst) {
            return Err("the first batch fails".into());
        }
        input.checkpointer.checkpoint().await?;
        Ok(())
    }

    async fn shard_ended(&mut self, checkpointer: &Checkpointer) -> ProcessorResult {
        checkpointer.checkpoint().await?;
        Ok(())
    }
}

/// Waits (on the paused clock) until `done` holds for the status, at most a simulated minute.
async fn until(status: &StatusHandle, what: &str, done: impl Fn(&kcl::WorkerStatus) -> bool) {
    for _ in 0..6_000 {
        if done(&status.snapshot()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: never; last status {:?}", status.snapshot());
}

#[tokio::test(start_paused = true)]
async fn the_status_shows_phases_progress_and_lag_per_shard() {
    let kinesis = Arc::new(MemoryKinesis::with_seed(2));
    kinesis.create_stream("s", 2);
    put_numbered(&kinesis, 0, 300, 300, Duration::ZERO).await;
    let failed = Arc::new(AtomicBool::new(false));
    let factory = {
        let failed = failed.clone();
        move |_: &str| -> Box<dyn RecordProcessor> { Box::new(FailOnce(failed.clone())) }
    };
    let worker = Worker::builder()
        .kinesis(kinesis.clone())
        .lease_store(Arc::new(MemoryLeaseStore::new()))
        .stream("s")
        .processor_factory(factory)
        .config(quick_config().failure_backoff(Duration::from_secs(2), Duration::from_secs(4)))
        .build()
        .unwrap();
    let status = worker.status_handle();
    let handle = worker.shutdown_handle();
    let before = status.snapshot();
    assert_eq!(before.phase, WorkerPhase::Starting);
    assert_eq!(before.worker_id, "w");
    assert!(before.shards.is_empty());

    let running = tokio::spawn(worker.run());
    until(&status, "a failed shard waits for its restart", |s| {
        s.shards
            .iter()
            .any(|sh| sh.phase == ShardPhase::RestartPending)
    })
    .await;
    until(&status, "every record processed", |s| {
        s.phase == WorkerPhase::Running
            && s.shards.len() == 2
            && s.shards.iter().map(|sh| sh.records_processed).sum::<u64>() == 300
    })
    .await;
    let now = status.snapshot();
    for shard in &now.shards {
        assert_eq!(shard.phase, ShardPhase::Processing, "{now:?}");
        assert!(shard.last_batch_at.is_some(), "{now:?}");
    }
    assert_eq!(
        now.max_millis_behind_latest(),
        Some(0),
        "caught up: {now:?}"
    );

    handle.shutdown();
    running.await.unwrap().unwrap();
    let after = status.snapshot();
    assert_eq!(after.phase, WorkerPhase::Stopped);
    assert!(after.shards.is_empty(), "{after:?}");
}
