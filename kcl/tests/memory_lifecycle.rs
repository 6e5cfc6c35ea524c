//! One shard's lifecycle on the in-memory Kinesis and lease store, under tokio's paused clock:
//! resuming inside an aggregate after a crash, a shard end that is never checkpointed, and a lease
//! lost while a batch is being processed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use kcl::leases::{LeaseStore, MemoryLeaseStore};
use kcl::{
    CheckpointError, Checkpointer, InitialPosition, InitializeInput, ProcessRecordsInput,
    ProcessorResult, RecordProcessor, Worker, WorkerConfig,
};
use kinesis_api::memory::MemoryKinesis;
use kinesis_api::{Kinesis, PutEntry, StreamRef};
use kinesis_format::{AggregateBuilder, HashKey};
use tokio::sync::Notify;

/// What the processors of a test did, in order.
type Calls = Arc<Mutex<Vec<String>>>;

fn config() -> WorkerConfig {
    WorkerConfig::default()
        .worker_id("w")
        .initial_position(InitialPosition::TrimHorizon)
        .failover_time(Duration::from_millis(1500))
        .take_interval(Duration::from_millis(200))
        .idle_time_between_reads(Duration::from_millis(100))
        .parent_poll_interval(Duration::from_millis(100))
}

fn services() -> (Arc<MemoryKinesis>, Arc<MemoryLeaseStore>) {
    let kinesis = MemoryKinesis::with_seed(5);
    kinesis.create_stream("s", 1);
    (Arc::new(kinesis), Arc::new(MemoryLeaseStore::new()))
}

/// Waits on the paused clock until `done`, at most a minute.
async fn until(mut done: impl FnMut() -> bool) {
    for _ in 0..600 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Records sub-record numbers; checkpoints at sub-record 4 of the first batch it sees.
struct CheckpointsInside(Calls);

#[async_trait]
impl RecordProcessor for CheckpointsInside {
    async fn process_records(&mut self, input: ProcessRecordsInput<'_>) -> ProcessorResult {
        for r in &input.records {
            self.0
                .lock()
                .unwrap()
                .push(format!("sub {}", r.sub_sequence_number));
        }
        if let Some(r) = input.records.iter().find(|r| r.sub_sequence_number == 4) {
            input
                .checkpointer
                .checkpoint_at(&r.sequence_number, 4)
                .await?;
        }
        Ok(())
    }

    async fn shard_ended(&mut self, checkpointer: &Checkpointer) -> ProcessorResult {
        checkpointer.checkpoint().await?;
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_restart_resumes_right_after_the_checkpointed_sub_record() {
    let (kinesis, store) = services();
    let mut aggregate = AggregateBuilder::new();
    for i in 0..10 {
        aggregate.add("k", None, i.to_string());
    }
    let entry = PutEntry {
        partition_key: "k".into(),
        explicit_hash_key: None,
        data: aggregate.finish(),
    };
    kinesis
        .put_records(&StreamRef::new("s"), vec![entry])
        .await
        .unwrap();
    let run = |calls: &Calls| {
        let calls = calls.clone();
        let factory = move |_: &str| -> Box<dyn RecordProcessor> {
            Box::new(CheckpointsInside(calls.clone()))
        };
        Worker::with_kinesis(kinesis.clone(), store.clone(), "s", factory, config())
    };
    let first: Calls = Arc::default();
    let worker = run(&first);
    let handle = worker.shutdown_handle();
    let task = tokio::spawn(worker.run());
    until(|| first.lock().unwrap().len() == 10).await;
    // Killed after checkpointing sub-record 4 of the aggregate.
    handle.stop_now();
    task.await.unwrap().unwrap();

    let second: Calls = Arc::default();
    let worker = run(&second);
    let handle = worker.shutdown_handle();
    let task = tokio::spawn(worker.run());
    until(|| !second.lock().unwrap().is_empty()).await;
    handle.shutdown();
    task.await.unwrap().unwrap();
    let expected: Vec<String> = (5..10).map(|i| format!("sub {i}")).collect();
    assert_eq!(
        *second.lock().unwrap(),
        expected,
        "from sub-record 5 on, once each"
    );
}

/// Records its calls; never checkpoints SHARD_END.
struct ForgetsShardEnd(Calls, String);

#[async_trait]
impl RecordProcessor for ForgetsShardEnd {
    async fn initialize(&mut self, _input: InitializeInput) -> ProcessorResult {
        self.0
            .lock()
            .unwrap()
            .push(format!("initialize {}", self.1));
        Ok(())
    }

    async fn process_records(&mut self, input: ProcessRecordsInput<'_>) -> ProcessorResult {
        input.checkpointer.checkpoint().await?;
        Ok(())
    }

    async fn shard_ended(&mut self, _checkpointer: &Checkpointer) -> ProcessorResult {
        self.0
            .lock()
            .unwrap()
            .push(format!("shard_ended {}", self.1));
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_shard_end_never_checkpointed_keeps_asking_and_the_children_wait() {
    let (kinesis, store) = services();
    let calls: Calls = Arc::default();
    let factory = {
        let calls = calls.clone();
        move |shard: &str| -> Box<dyn RecordProcessor> {
            Box::new(ForgetsShardEnd(calls.clone(), shard.to_owned()))
        }
    };
    let worker = Worker::with_kinesis(kinesis.clone(), store.clone(), "s", factory, config());
    let handle = worker.shutdown_handle();
    let task = tokio::spawn(worker.run());
    let parent = "shardId-000000000000";
    until(|| !calls.lock().unwrap().is_empty()).await;
    kinesis
        .split_shard("s", parent, HashKey(u128::MAX / 2))
        .unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    handle.shutdown();
    task.await.unwrap().unwrap();
    let calls = calls.lock().unwrap().clone();
    let asked = calls
        .iter()
        .filter(|c| **c == format!("shard_ended {parent}"))
        .count();
    assert!(asked >= 2, "asked again after each pause: {calls:?}");
    assert_eq!(
        calls.iter().filter(|c| c.starts_with("initialize")).count(),
        1,
        "no child started: {calls:?}"
    );
    let lease = store.get(parent).await.unwrap().unwrap();
    assert!(!lease.is_finished(), "the parent is not at SHARD_END");
}

/// Holds its first batch until told, then checkpoints; records what happened.
struct SlowFirstBatch {
    calls: Calls,
    release: Arc<Notify>,
    started: Arc<Notify>,
}

#[async_trait]
impl RecordProcessor for SlowFirstBatch {
    async fn process_records(&mut self, input: ProcessRecordsInput<'_>) -> ProcessorResult {
        self.calls.lock().unwrap().push("batch".into());
        self.started.notify_one();
        self.release.notified().await;
        match input.checkpointer.checkpoint().await {
            Err(CheckpointError::LeaseLost { .. }) => {
                self.calls.lock().unwrap().push("checkpoint refused".into())
            }
            other => self
                .calls
                .lock()
                .unwrap()
                .push(format!("checkpoint {other:?}")),
        }
        Ok(())
    }

    async fn lease_lost(&mut self) -> ProcessorResult {
        self.calls.lock().unwrap().push("lease_lost".into());
        Ok(())
    }

    async fn shard_ended(&mut self, checkpointer: &Checkpointer) -> ProcessorResult {
        checkpointer.checkpoint().await?;
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_lease_taken_mid_batch_refuses_the_checkpoint_and_stops_the_processor() {
    let (kinesis, store) = services();
    let entry = PutEntry {
        partition_key: "k".into(),
        explicit_hash_key: None,
        data: Bytes::from_static(b"1"),
    };
    kinesis
        .put_records(&StreamRef::new("s"), vec![entry])
        .await
        .unwrap();
    let (calls, release, started): (Calls, Arc<Notify>, Arc<Notify>) = Default::default();
    let factory = {
        let (calls, release, started) = (calls.clone(), release.clone(), started.clone());
        move |_: &str| -> Box<dyn RecordProcessor> {
            Box::new(SlowFirstBatch {
                calls: calls.clone(),
                release: release.clone(),
                started: started.clone(),
            })
        }
    };
    // A long failover time: the worker would not take the lease back during the test.
    let config = config().failover_time(Duration::from_secs(600));
    let worker = Worker::with_kinesis(kinesis.clone(), store.clone(), "s", factory, config);
    let handle = worker.shutdown_handle();
    let task = tokio::spawn(worker.run());
    started.notified().await;
    // Another worker takes the lease while the batch is being processed.
    let shard = "shardId-000000000000";
    let lease = store.get(shard).await.unwrap().unwrap();
    store.take(&lease, "other").await.unwrap();
    release.notify_one();
    until(|| calls.lock().unwrap().contains(&"lease_lost".to_string())).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    handle.shutdown();
    task.await.unwrap().unwrap();
    assert_eq!(
        *calls.lock().unwrap(),
        ["batch", "checkpoint refused", "lease_lost"],
        "one batch, its checkpoint refused, then lease_lost and nothing more"
    );
    let lease = store.get(shard).await.unwrap().unwrap();
    assert_eq!(
        lease.owner.as_deref(),
        Some("other"),
        "the lease stays taken"
    );
}
