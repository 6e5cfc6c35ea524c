//! What no retry can fix stops the worker with a typed error that says what to fix, or cleans
//! up, instead of retrying forever behind a live-looking worker:
//! - a deleted stream: `run` returns `StreamNotFound` (processors get `shutdown_requested`);
//! - a deleted lease table: `run` returns `LeaseTableDeleted` (processors get `lease_lost`);
//! - a lease for a shard the stream does not have: the lease is deleted, other shards go on;
//! - GetRecords denied: `run` returns `Kinesis` with the service's code;
//! - a lease table of another stream, or a stream that does not exist: `run` refuses to start
//!   (and creates no table for a missing stream).

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use integration_tests::consume::{DeliveryLog, put_numbered, spawn_worker, test_worker_config};
use integration_tests::fault_proxy::Faults;
use integration_tests::{TestEnv, TestTable, random_name};
use kcl::leases::{CheckpointPosition, DynamoDbLeaseStore, Lease, LeaseStore};
use kcl::{InitialPosition, Worker, WorkerError};

/// How long a worker may take to notice and stop.
const STOP_WITHIN: Duration = Duration::from_secs(30);

fn worker(env: &TestEnv, table: &str, stream: &str, log: &DeliveryLog) -> Worker {
    Worker::new(
        &env.sdk_config,
        table,
        stream,
        log.factory("w"),
        test_worker_config("w", InitialPosition::TrimHorizon)
            .shard_sync_interval(Duration::from_millis(500)),
    )
}

async fn stopped(task: tokio::task::JoinHandle<Result<(), WorkerError>>) -> WorkerError {
    tokio::time::timeout(STOP_WITHIN, task)
        .await
        .expect("the worker stopped by itself")
        .expect("task")
        .expect_err("the worker stopped with an error")
}

/// The error's message, then its sources, one per line.
fn chain(e: &dyn Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out += &format!("\n  caused by: {s}");
        source = s.source();
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_stream_stops_the_worker_with_a_typed_error() {
    integration_tests::log_capture::warnings_to_test_output();
    let env = TestEnv::new().await;
    let stream = env.create_stream(2).await;
    let table = TestTable::adopt(&env, random_name("app"));
    let log = DeliveryLog::default();
    let (_handle, task) = spawn_worker(worker(&env, &table.name, &stream.name, &log));
    put_numbered(&env.kinesis, &stream.name, 0, 50).await;
    log.wait_for("the records", Duration::from_secs(30), |l| {
        l.distinct() >= 50
    })
    .await;
    env.kinesis
        .delete_stream()
        .stream_name(&stream.name)
        .send()
        .await
        .expect("DeleteStream");
    let err = stopped(task).await;
    eprintln!("{}", chain(&err));
    assert!(matches!(err, WorkerError::StreamNotFound { .. }), "{err:?}");
    assert!(err.to_string().contains(&stream.name), "{err}");
    assert!(err.to_string().contains("check the stream name"), "{err}");
    let source = err.source().expect("the Kinesis error is kept");
    assert!(
        source.to_string().contains("ResourceNotFoundException"),
        "{source}"
    );
    assert!(source.source().is_some(), "and the SDK's error under it");
    assert!(
        chain(&err).len() < 1_000,
        "short, no HTTP dump: {}",
        chain(&err)
    );
    assert_eq!(
        log.snapshot().shutdown_requested.len(),
        2,
        "processors were told"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_lease_table_stops_the_worker_with_a_typed_error() {
    integration_tests::log_capture::warnings_to_test_output();
    let env = TestEnv::new().await;
    let stream = env.create_stream(2).await;
    let table = TestTable::adopt(&env, random_name("app"));
    let log = DeliveryLog::default();
    let (_handle, task) = spawn_worker(worker(&env, &table.name, &stream.name, &log));
    log.wait_for("both shards reading", Duration::from_secs(30), |l| {
        l.initialized.len() >= 2
    })
    .await;
    env.dynamodb
        .delete_table()
        .table_name(&table.name)
        .send()
        .await
        .expect("DeleteTable");
    let err = stopped(task).await;
    eprintln!("{}", chain(&err));
    assert!(
        matches!(err, WorkerError::LeaseTableDeleted { .. }),
        "{err:?}"
    );
    assert!(err.source().is_some());
    assert_eq!(log.snapshot().lease_lost.len(), 2, "processors were told");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_for_a_shard_that_does_not_exist_is_deleted_and_the_rest_goes_on() {
    integration_tests::log_capture::warnings_to_test_output();
    let env = TestEnv::new().await;
    let stream = env.create_stream(2).await;
    let table = TestTable::adopt(&env, random_name("app"));
    let store = DynamoDbLeaseStore::new(env.dynamodb.clone(), table.name.clone());
    store.ensure_table().await.expect("table");
    let ghost = "shardId-000000000099";
    store
        .create_if_absent(&Lease::new(ghost, CheckpointPosition::TrimHorizon))
        .await
        .expect("lease");
    let log = DeliveryLog::default();
    let (handle, task) = spawn_worker(worker(&env, &table.name, &stream.name, &log));
    put_numbered(&env.kinesis, &stream.name, 0, 100).await;
    log.wait_for("the real shards' records", Duration::from_secs(30), |l| {
        l.distinct() >= 100
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while store.get(ghost).await.expect("get").is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the missing shard's lease was not deleted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    handle.shutdown();
    task.await.expect("task").expect("worker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_records_denied_stops_the_worker_with_the_services_code() {
    integration_tests::log_capture::warnings_to_test_output();
    let env = TestEnv::new().await;
    let stream = env.create_stream(1).await;
    let table = TestTable::adopt(&env, random_name("app"));
    let proxy = env
        .fault_proxy(Faults {
            deny_get_records: true,
            ..Faults::default()
        })
        .await;
    let log = DeliveryLog::default();
    let store = DynamoDbLeaseStore::new(env.dynamodb.clone(), table.name.clone());
    let worker = Worker::with_store(
        env.kinesis_client_at(&proxy.url),
        Arc::new(store),
        &stream.name,
        log.factory("w"),
        test_worker_config("w", InitialPosition::TrimHorizon),
    );
    let (_handle, task) = spawn_worker(worker);
    let err = stopped(task).await;
    eprintln!("{}", chain(&err));
    match &err {
        WorkerError::Kinesis { source, .. } => {
            assert_eq!(source.code(), Some("AccessDeniedException"))
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("fix the permissions"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_table_of_another_stream_is_refused() {
    integration_tests::log_capture::warnings_to_test_output();
    let env = TestEnv::new().await;
    let first = env.create_stream(1).await;
    let second = env.create_stream(1).await;
    let table = TestTable::adopt(&env, random_name("app"));
    let log = DeliveryLog::default();
    let (handle, task) = spawn_worker(worker(&env, &table.name, &first.name, &log));
    log.wait_for("the first stream read", Duration::from_secs(30), |l| {
        !l.initialized.is_empty()
    })
    .await;
    handle.shutdown();
    task.await.expect("task").expect("worker");

    let (_handle, task) = spawn_worker(worker(&env, &table.name, &second.name, &log));
    let err = stopped(task).await;
    eprintln!("{}", chain(&err));
    match &err {
        WorkerError::LeaseTableOfAnotherStream { expected, found } => {
            assert!(expected.contains(&second.name) && found.contains(&first.name));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_does_not_exist_is_reported_before_any_table_is_created() {
    integration_tests::log_capture::warnings_to_test_output();
    let env = TestEnv::new().await;
    let table = TestTable::adopt(&env, random_name("app"));
    let log = DeliveryLog::default();
    let missing = random_name("missing");
    let (_handle, task) = spawn_worker(worker(&env, &table.name, &missing, &log));
    let err = stopped(task).await;
    eprintln!("{}", chain(&err));
    assert!(matches!(err, WorkerError::StreamNotFound { .. }), "{err:?}");
    assert!(err.to_string().contains(&missing));
    let described = env
        .dynamodb
        .describe_table()
        .table_name(&table.name)
        .send()
        .await;
    assert!(described.is_err(), "no lease table was created");
}
