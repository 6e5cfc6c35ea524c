//! A record processor that panics, or returns an error, does not stall its shard: the failure is
//! logged with the shard, the lease stays with the worker, and the shard restarts from its last
//! checkpoint with a new processor after a back-off, so every record is delivered at least once.
//! Before, a panic was dropped with the task, the lease stayed held and renewed, and the shard
//! never moved again.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use integration_tests::consume::{DeliveryLog, put_numbered, spawn_worker, test_worker_config};
use integration_tests::{TestEnv, TestTable, random_name};
use kcl::leases::{DynamoDbLeaseStore, LeaseStore};
use kcl::{
    Checkpointer, InitialPosition, ProcessRecordsInput, ProcessorResult, RecordProcessor, Worker,
};

/// How the first few processors fail.
#[derive(Clone, Copy, Debug)]
enum Failure {
    Panic,
    Error,
}

/// Fails in its first `process_records` while fewer than `failures` processors have failed, then
/// records into the log like the recording processor (checkpointing every batch).
struct Flaky {
    how: Failure,
    failures: usize,
    failed: Arc<AtomicUsize>,
    inner: Box<dyn RecordProcessor>,
}

#[async_trait]
impl RecordProcessor for Flaky {
    async fn process_records(&mut self, input: ProcessRecordsInput<'_>) -> ProcessorResult {
        if self.failed.fetch_add(1, Ordering::SeqCst) < self.failures {
            match self.how {
                Failure::Panic => panic!("injected panic in process_records"),
                Failure::Error => return Err("injected processing error".into()),
            }
        }
        self.failed.fetch_sub(1, Ordering::SeqCst);
        self.inner.process_records(input).await
    }

    async fn shard_ended(&mut self, checkpointer: &Checkpointer) -> ProcessorResult {
        self.inner.shard_ended(checkpointer).await
    }

    async fn shutdown_requested(&mut self, checkpointer: &Checkpointer) -> ProcessorResult {
        self.inner.shutdown_requested(checkpointer).await
    }
}

async fn failing_processors_do_not_stall_their_shards(how: Failure) {
    let env = TestEnv::new().await;
    let stream = env.create_stream(2).await;
    let table = TestTable::adopt(&env, random_name("app"));
    let log = DeliveryLog::default();
    let failed = Arc::new(AtomicUsize::new(0));
    let recorder = log.factory("w");
    let factory = {
        let failed = failed.clone();
        move |shard: &str| -> Box<dyn RecordProcessor> {
            Box::new(Flaky {
                how,
                failures: 4,
                failed: failed.clone(),
                inner: recorder(shard),
            })
        }
    };
    let config = test_worker_config("w", InitialPosition::TrimHorizon)
        .failure_backoff(Duration::from_millis(50), Duration::from_millis(400));
    let (handle, task) = spawn_worker(Worker::new(
        &env.sdk_config,
        &table.name,
        &stream.name,
        factory,
        config,
    ));
    put_numbered(&env.kinesis, &stream.name, 0, 300).await;
    log.wait_for(
        "every record despite the failures",
        Duration::from_secs(30),
        |l| l.distinct() >= 300,
    )
    .await;
    assert!(
        failed.load(Ordering::SeqCst) >= 4,
        "{how:?}: the failures happened"
    );
    // The worker kept its leases throughout (no other worker exists to take them).
    let store = DynamoDbLeaseStore::new(env.dynamodb.clone(), table.name.clone());
    for lease in store.list().await.expect("leases") {
        assert_eq!(lease.owner.as_deref(), Some("w"), "{how:?}: {lease:?}");
    }
    handle.shutdown();
    task.await.expect("task").expect("worker");
    assert_eq!(log.snapshot().shutdown_requested.len(), 2, "{how:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_processor_restarts_from_its_checkpoint() {
    integration_tests::log_capture::warnings_to_test_output();
    failing_processors_do_not_stall_their_shards(Failure::Panic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_returning_an_error_restarts_from_its_checkpoint() {
    integration_tests::log_capture::warnings_to_test_output();
    failing_processors_do_not_stall_their_shards(Failure::Error).await;
}
