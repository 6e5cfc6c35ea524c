//! A worker killed and restarted with the same worker id (the common case: the id is the host or
//! pod name) gets its shards back: at once by default (it resumes the leases its id holds, as the
//! Java KCL does), or after the failover time with `resume_own_leases_at_start(false)`. Before,
//! a restarted worker counted its id's expired leases as its own live ones and never took them:
//! those shards stopped for good.

use std::time::{Duration, Instant};

use integration_tests::consume::{
    DeliveryLog, TEST_FAILOVER, put_numbered, spawn_worker, test_worker_config,
};
use integration_tests::{TestEnv, TestTable, random_name};
use kcl::leases::{DynamoDbLeaseStore, LeaseStore};
use kcl::{InitialPosition, Worker, WorkerConfig};

async fn restart_with_the_same_id(config: impl Fn() -> WorkerConfig) -> Duration {
    let env = TestEnv::new().await;
    let stream = env.create_stream(4).await;
    let table = TestTable::adopt(&env, random_name("app"));
    let log = DeliveryLog::default();
    let worker = |log: &DeliveryLog| {
        Worker::new(
            &env.sdk_config,
            &table.name,
            &stream.name,
            log.factory("w0"),
            config(),
        )
    };
    let (handle, task) = spawn_worker(worker(&log));
    put_numbered(&env.kinesis, &stream.name, 0, 400).await;
    log.wait_for("the first 400 records", Duration::from_secs(30), |l| {
        l.distinct() >= 400
    })
    .await;
    // Killed: no release, no shutdown_requested. The table still names w0 as every owner.
    handle.stop_now();
    task.await.expect("task").expect("worker");
    let restarted = Instant::now();
    let (handle, task) = spawn_worker(worker(&log));
    put_numbered(&env.kinesis, &stream.name, 400, 400).await;
    log.wait_for(
        "records put after the restart",
        Duration::from_secs(30),
        |l| l.distinct() >= 800,
    )
    .await;
    let resumed_in = restarted.elapsed();
    let store = DynamoDbLeaseStore::new(env.dynamodb.clone(), table.name.clone());
    let leases = store.list().await.expect("leases");
    assert!(
        leases.iter().all(|l| l.owner.as_deref() == Some("w0")),
        "{leases:?}"
    );
    handle.shutdown();
    task.await.expect("task").expect("worker");
    resumed_in
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_restarted_with_the_same_id_resumes_its_leases_at_once() {
    integration_tests::log_capture::warnings_to_test_output();
    let took =
        restart_with_the_same_id(|| test_worker_config("w0", InitialPosition::TrimHorizon)).await;
    eprintln!("every shard processed again {took:?} after the restart");
    assert!(
        took < TEST_FAILOVER,
        "resumed without waiting for the leases to expire: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_resume_at_start_the_ids_leases_are_taken_once_expired() {
    integration_tests::log_capture::warnings_to_test_output();
    let took = restart_with_the_same_id(|| {
        test_worker_config("w0", InitialPosition::TrimHorizon).resume_own_leases_at_start(false)
    })
    .await;
    eprintln!("every shard processed again {took:?} after the restart");
    assert!(
        took >= TEST_FAILOVER,
        "the leases were taken before they expired: {took:?}"
    );
}
