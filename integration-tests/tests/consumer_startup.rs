//! Start-up on a bad day: a paused DynamoDB or Kinesis (every call held without an answer) does
//! not block `shutdown()`, every lease-table call gives up after its timeout with a typed error,
//! and a setting that would panic is a typed error naming it. Before, a worker stuck creating
//! its table never stopped, DynamoDB calls could block forever, and a zero failover time panicked
//! inside a timer.

use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, Instant};

use integration_tests::consume::{DeliveryLog, spawn_worker, test_worker_config};
use integration_tests::fault_proxy::{FaultProxy, Faults};
use integration_tests::{TestEnv, TestTable, random_name};
use kcl::leases::{DynamoDbLeaseStore, LeaseError, LeaseStore};
use kcl::{AwsErrorKind, InitialPosition, Worker, WorkerError};

/// A proxy that never answers.
async fn black_hole(env: &TestEnv) -> FaultProxy {
    env.fault_proxy(Faults {
        stall_all_calls: true,
        ..Faults::default()
    })
    .await
}

fn dynamodb_at(env: &TestEnv, url: &str) -> aws_sdk_dynamodb::Client {
    let config = aws_sdk_dynamodb::config::Builder::from(&env.sdk_config)
        .endpoint_url(url)
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

/// Starts a worker, asks it to shut down after 300 ms, and returns how long `run` took to return
/// after that.
async fn shutdown_delay(worker: Worker) -> Duration {
    let (handle, task) = spawn_worker(worker);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    handle.shutdown();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("run returned after shutdown()")
        .expect("task")
        .expect("a shut-down worker returns Ok");
    asked.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_honoured_while_the_lease_table_or_kinesis_does_not_answer() {
    integration_tests::log_capture::warnings_to_test_output();
    let env = TestEnv::new().await;
    let stream = env.create_stream(1).await;
    let table = TestTable::adopt(&env, random_name("app"));
    let proxy = black_hole(&env).await;
    let log = DeliveryLog::default();
    let config = || test_worker_config("w", InitialPosition::TrimHorizon);

    let paused_dynamodb = Worker::with_store(
        env.kinesis.clone(),
        Arc::new(DynamoDbLeaseStore::new(
            dynamodb_at(&env, &proxy.url),
            &table.name,
        )),
        &stream.name,
        log.factory("w"),
        config(),
    );
    let took = shutdown_delay(paused_dynamodb).await;
    assert!(took < Duration::from_secs(2), "paused DynamoDB: {took:?}");

    let paused_kinesis = Worker::with_store(
        env.kinesis_client_at(&proxy.url),
        Arc::new(DynamoDbLeaseStore::new(env.dynamodb.clone(), &table.name)),
        &stream.name,
        log.factory("w"),
        config(),
    );
    let took = shutdown_delay(paused_kinesis).await;
    assert!(took < Duration::from_secs(2), "paused Kinesis: {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_table_call_gives_up_after_its_timeout_with_a_typed_error() {
    integration_tests::log_capture::warnings_to_test_output();
    let env = TestEnv::new().await;
    let proxy = black_hole(&env).await;
    let store = DynamoDbLeaseStore::new(dynamodb_at(&env, &proxy.url), "any")
        .with_call_timeout(Duration::from_millis(200));
    let started = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(10), store.list())
        .await
        .expect("the call ended by itself")
        .expect_err("no answer is an error");
    let took = started.elapsed();
    // Three attempts of 200 ms with at most 50 + 100 ms of back-off between them.
    assert!(took < Duration::from_secs(2), "{took:?}");
    match &err {
        LeaseError::Store { source } => assert_eq!(source.kind(), &AwsErrorKind::Timeout),
        other => panic!("{other:?}"),
    }
    assert!(
        err.source().is_some(),
        "the AWS error is kept as the source"
    );
    eprintln!("{err}");
}

#[tokio::test]
async fn invalid_settings_are_a_typed_error_naming_the_setting() {
    integration_tests::log_capture::warnings_to_test_output();
    let env = TestEnv::new().await;
    let log = DeliveryLog::default();
    let worker = Worker::new(
        &env.sdk_config,
        "never-created",
        "never-read",
        log.factory("w"),
        test_worker_config("w", InitialPosition::TrimHorizon).failover_time(Duration::ZERO),
    );
    match worker.run().await {
        Err(WorkerError::Config(e)) => {
            assert_eq!(e.setting, "failover_time");
            assert!(e.to_string().contains("failover_time"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}
