//! Where a worker starts on a stream without checkpoints: LATEST delivers only what is written
//! after it started reading; AT_TIMESTAMP only what arrived from that time on.

use std::time::{Duration, SystemTime};

use aws_sdk_kinesis::primitives::Blob;
use integration_tests::consume::{DeliveryLog, test_worker_config};
use integration_tests::{TestEnv, TestStream, TestTable, random_name};
use kcl::{InitialPosition, Worker};

async fn put(env: &TestEnv, stream: &TestStream, tag: &str, n: usize) {
    for i in 0..n {
        env.kinesis
            .put_record()
            .stream_name(&stream.name)
            .partition_key(format!("{tag}-{i}"))
            .data(Blob::new(format!("{tag}-{i}").into_bytes()))
            .send()
            .await
            .expect("PutRecord");
    }
}

fn keys(log: &DeliveryLog) -> Vec<String> {
    log.snapshot()
        .records
        .iter()
        .map(|(_, _, r)| r.partition_key.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_delivers_only_records_written_after_reading_started() {
    let env = TestEnv::new().await;
    let stream = env.create_stream(2).await;
    let table = TestTable::adopt(&env, random_name("app"));
    put(&env, &stream, "old", 30).await;
    let log = DeliveryLog::default();
    let worker = Worker::new(
        &env.sdk_config,
        &table.name,
        &stream.name,
        log.factory("w"),
        test_worker_config("w", InitialPosition::Latest),
    );
    let handle = worker.shutdown_handle();
    let task = tokio::spawn(async move { worker.run().await.expect("worker") });
    log.wait_for("both shards reading", Duration::from_secs(30), |l| {
        l.initialized.len() >= 2
    })
    .await;
    put(&env, &stream, "new", 30).await;
    log.wait_for("the new records", Duration::from_secs(30), |l| {
        l.records.len() >= 30
    })
    .await;
    handle.shutdown();
    task.await.expect("worker");
    let delivered = keys(&log);
    assert_eq!(delivered.len(), 30);
    assert!(
        delivered.iter().all(|k| k.starts_with("new-")),
        "{delivered:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_timestamp_delivers_records_from_that_time_on() {
    let env = TestEnv::new().await;
    let stream = env.create_stream(2).await;
    let table = TestTable::adopt(&env, random_name("app"));
    put(&env, &stream, "before", 20).await;
    // Arrival times have millisecond precision: keep the two groups apart.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let from = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    put(&env, &stream, "after", 20).await;
    let log = DeliveryLog::default();
    let worker = Worker::new(
        &env.sdk_config,
        &table.name,
        &stream.name,
        log.factory("w"),
        test_worker_config("w", InitialPosition::AtTimestamp(from)),
    );
    let handle = worker.shutdown_handle();
    let task = tokio::spawn(async move { worker.run().await.expect("worker") });
    log.wait_for("the later records", Duration::from_secs(30), |l| {
        l.records.len() >= 20
    })
    .await;
    handle.shutdown();
    task.await.expect("worker");
    let delivered = keys(&log);
    assert_eq!(delivered.len(), 20);
    assert!(
        delivered.iter().all(|k| k.starts_with("after-")),
        "{delivered:?}"
    );
}
