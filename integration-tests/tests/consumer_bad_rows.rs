//! One malformed lease row (a checkpoint that is not a sequence number, a counter that is not a
//! number) does not stop the worker: that row's shard is skipped and logged once with its key and
//! why, every other shard is processed, and once the row is fixed (here: deleted, so shard sync
//! creates it anew) its shard is processed too. Before, `run` failed at start-up, and a running
//! worker's every take round failed. (The log capture is global, so this is its own binary.)

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use integration_tests::consume::{DeliveryLog, put_numbered, spawn_worker, test_worker_config};
use integration_tests::log_capture::Captured;
use integration_tests::{TestEnv, TestTable, random_name};
use kcl::leases::{DynamoDbLeaseStore, LeaseStore};
use kcl::{InitialPosition, Worker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_row_skips_its_shard_only_and_is_logged_once() {
    let captured = Captured::install();
    let env = TestEnv::new().await;
    let stream = env.create_stream(2).await;
    let table = TestTable::adopt(&env, random_name("app"));
    let store = DynamoDbLeaseStore::new(env.dynamodb.clone(), table.name.clone());
    store.ensure_table().await.expect("table");
    let bad_shard = "shardId-000000000001";
    let s = |v: &str| AttributeValue::S(v.to_owned());
    for item in [
        vec![
            ("leaseKey", s(bad_shard)),
            ("leaseCounter", AttributeValue::N("0".into())),
            ("checkpoint", s("not-a-sequence-number")),
        ],
        vec![("leaseKey", s("junk-row")), ("leaseCounter", s("seven"))],
    ] {
        env.dynamodb
            .put_item()
            .table_name(&table.name)
            .set_item(Some(
                item.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            ))
            .send()
            .await
            .expect("PutItem");
    }

    let log = DeliveryLog::default();
    let config = test_worker_config("w", InitialPosition::TrimHorizon)
        .shard_sync_interval(Duration::from_millis(200));
    let (handle, task) = spawn_worker(Worker::new(
        &env.sdk_config,
        &table.name,
        &stream.name,
        log.factory("w"),
        config,
    ));
    put_numbered(&env.kinesis, &stream.name, 0, 200).await;
    log.wait_for("the good shard's records", Duration::from_secs(30), |l| {
        l.records.iter().any(|(_, shard, _)| shard != bad_shard)
    })
    .await;
    // Several take rounds and syncs later, the bad shard is still skipped, each row logged once.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let snapshot = log.snapshot();
    assert!(
        snapshot
            .records
            .iter()
            .all(|(_, shard, _)| shard != bad_shard),
        "the malformed row's shard is not processed"
    );
    for key in [bad_shard, "junk-row"] {
        let lines = captured.lines_with(&["lease row is malformed", key]);
        assert_eq!(lines.len(), 1, "{key} logged once: {lines:#?}");
    }
    assert!(!task.is_finished(), "the worker keeps running");

    // The row is fixed: shard sync creates the lease again and the shard is processed.
    store.delete(bad_shard).await.expect("delete");
    log.wait_for("every record", Duration::from_secs(30), |l| {
        l.distinct() >= 200
    })
    .await;
    handle.shutdown();
    task.await.expect("task").expect("worker");
}
