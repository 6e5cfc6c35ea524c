//! Several workers on one stream: leases settle at a fair share; a joining worker takes its share
//! without a record processed twice (graceful hand-off); a worker that stops without
//! releasing (its task aborted, or its process killed with SIGKILL) has its shards taken within
//! the failover time plus one take interval, and every record is processed at least once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use integration_tests::consume::{
    DeliveryLog, TEST_FAILOVER, TEST_TAKE_INTERVAL, test_worker_config,
};
use integration_tests::{TestEnv, TestTable, random_name};
use kcl::leases::{DynamoDbLeaseStore, Lease, LeaseStore};
use kcl::{InitialPosition, Worker};
use kpl::{Producer, ProducerConfig, UserRecord};

const FAILOVER: Duration = TEST_FAILOVER;
const TAKE_INTERVAL: Duration = TEST_TAKE_INTERVAL;

/// Owner → number of leases.
fn owners(leases: &[Lease]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for l in leases {
        *m.entry(l.owner.clone().unwrap_or_else(|| "-".into()))
            .or_insert(0) += 1;
    }
    m
}

/// Polls the lease table until `condition` holds; returns when it first held.
async fn wait_for_leases(
    store: &DynamoDbLeaseStore,
    what: &str,
    timeout: Duration,
    condition: impl Fn(&[Lease]) -> bool,
) -> Instant {
    let deadline = Instant::now() + timeout;
    loop {
        // The table may not exist yet while the workers start: that is "not yet", not a failure.
        let leases = store.list().await;
        if let Ok(leases) = &leases
            && condition(leases)
        {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {:?}",
            leases.map(|l| owners(&l))
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `n` distinct records were processed (30 s at most).
async fn wait_for_distinct(log: &DeliveryLog, n: usize) {
    log.wait_for(
        &format!("{n} distinct records"),
        Duration::from_secs(30),
        |l| {
            let distinct: std::collections::HashSet<&str> = l
                .records
                .iter()
                .map(|(_, _, r)| r.partition_key.as_ref())
                .collect();
            distinct.len() >= n
        },
    )
    .await;
}

async fn produce(env: &TestEnv, stream: &str, from: usize, n: usize) {
    let producer = Producer::new(&env.sdk_config, ProducerConfig::default()).expect("producer");
    let mut futures = Vec::new();
    for i in from..from + n {
        let record = UserRecord::new(
            stream,
            format!("key-{i}"),
            Bytes::from(format!("record-{i}")),
        );
        futures.push(producer.put(record).await.expect("accepted"));
    }
    for f in futures {
        f.await.expect("stored");
    }
    producer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_settle_at_3_3_2_and_an_aborted_workers_shards_fail_over() {
    integration_tests::log_capture::warnings_to_test_output();
    let env = TestEnv::new().await;
    let stream = env.create_stream(8).await;
    let table = TestTable::adopt(&env, random_name("app"));
    let store = DynamoDbLeaseStore::new(env.dynamodb.clone(), table.name.clone());
    let log = DeliveryLog::default();
    let mut handles = Vec::new();
    for w in ["w0", "w1", "w2"] {
        let worker = Worker::new(
            &env.sdk_config,
            &table.name,
            &stream.name,
            log.factory(w),
            test_worker_config(w, InitialPosition::TrimHorizon),
        );
        handles.push((
            worker.shutdown_handle(),
            tokio::spawn(async move { worker.run().await.expect("worker") }),
        ));
    }
    wait_for_leases(&store, "3/3/2", Duration::from_secs(30), |leases| {
        let mut counts: Vec<usize> = owners(leases)
            .into_iter()
            .filter(|(o, _)| o != "-")
            .map(|(_, n)| n)
            .collect();
        counts.sort();
        counts == [2, 3, 3]
    })
    .await;

    produce(&env, &stream.name, 0, 2_000).await;
    log.wait_for("the first 2,000 records", Duration::from_secs(30), |l| {
        l.records.len() >= 2_000
    })
    .await;

    // w2 stops dead: no shutdown_requested, no release.
    let w2_shards = store
        .list()
        .await
        .unwrap()
        .into_iter()
        .filter(|l| l.owner.as_deref() == Some("w2"))
        .count();
    let stopped = Instant::now();
    let (w2_handle, w2_task) = handles.pop().expect("w2");
    w2_handle.stop_now();
    w2_task.await.expect("w2 task");
    let taken = wait_for_leases(
        &store,
        "w2's shards taken",
        Duration::from_secs(20),
        |leases| {
            leases
                .iter()
                .all(|l| l.owner.as_deref().is_some_and(|o| o != "w2"))
        },
    )
    .await;
    let failover = taken - stopped;
    eprintln!("{w2_shards} shards of an aborted worker taken over in {failover:?}");
    assert!(
        failover <= FAILOVER + TAKE_INTERVAL + Duration::from_secs(2),
        "failover took {failover:?}"
    );

    produce(&env, &stream.name, 2_000, 2_000).await;
    wait_for_distinct(&log, 4_000).await;
    let snapshot = log.snapshot();
    let mut seen: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (worker, _, r) in &snapshot.records {
        seen.entry(r.partition_key.as_ref())
            .or_default()
            .push(worker);
    }
    let duplicates: usize = seen.values().map(|w| w.len() - 1).sum();
    eprintln!(
        "duplicates (re-deliveries of un-checkpointed batches after a lease changed hands): {duplicates}"
    );
    assert_eq!(seen.len(), 4_000, "every record processed at least once");
    // A duplicate only ever comes from a hand-over (the abort, or a steal while rebalancing):
    // no worker delivers the same record twice itself.
    for (key, workers) in &seen {
        let mut distinct = workers.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(
            distinct.len(),
            workers.len(),
            "{key} delivered twice by one worker: {workers:?}"
        );
    }
    for (handle, task) in handles {
        handle.shutdown();
        task.await.expect("worker");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_process_has_its_shards_taken_within_the_failover_time() {
    integration_tests::log_capture::warnings_to_test_output();
    let env = TestEnv::new().await;
    let stream = env.create_stream(4).await;
    let table = TestTable::adopt(&env, random_name("app"));
    let store = DynamoDbLeaseStore::new(env.dynamodb.clone(), table.name.clone());
    store.ensure_table().await.expect("lease table");

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kcl_worker"))
        .args([
            &table.name,
            &stream.name,
            "doomed",
            &FAILOVER.as_millis().to_string(),
        ])
        .spawn()
        .expect("start the worker process");
    let result = async {
        wait_for_leases(
            &store,
            "the process to hold every lease",
            Duration::from_secs(30),
            |leases| {
                leases.len() == 4 && leases.iter().all(|l| l.owner.as_deref() == Some("doomed"))
            },
        )
        .await;
        let log = DeliveryLog::default();
        let survivor = Worker::new(
            &env.sdk_config,
            &table.name,
            &stream.name,
            log.factory("survivor"),
            test_worker_config("survivor", InitialPosition::TrimHorizon),
        );
        let handle = survivor.shutdown_handle();
        let task = tokio::spawn(async move { survivor.run().await.expect("survivor") });

        let killed = Instant::now();
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        let taken = wait_for_leases(
            &store,
            "the survivor to take every lease",
            Duration::from_secs(20),
            |leases| {
                leases
                    .iter()
                    .all(|l| l.owner.as_deref() == Some("survivor"))
            },
        )
        .await;
        let failover = taken - killed;
        eprintln!("failover after kill -9: {failover:?}");
        assert!(
            failover <= FAILOVER + TAKE_INTERVAL + Duration::from_secs(2),
            "failover took {failover:?}"
        );
        assert!(
            failover >= FAILOVER,
            "taken before the lease could have expired: {failover:?}"
        );
        handle.shutdown();
        task.await.expect("survivor task");
    }
    .await;
    let _ = child.kill();
    result
}

/// A worker joining a busy one takes its share through graceful hand-offs: the owner's
/// processor checkpoints when asked, and the newcomer starts from there, so while records keep
/// coming not one is processed twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_worker_takes_its_share_without_a_record_processed_twice() {
    integration_tests::log_capture::warnings_to_test_output();
    let env = TestEnv::new().await;
    let stream = env.create_stream(6).await;
    let table = TestTable::adopt(&env, random_name("app"));
    let store = DynamoDbLeaseStore::new(env.dynamodb.clone(), table.name.clone());
    let log = DeliveryLog::default();
    let start = |w: &str| {
        let worker = Worker::new(
            &env.sdk_config,
            &table.name,
            &stream.name,
            log.factory(w),
            test_worker_config(w, InitialPosition::TrimHorizon),
        );
        (
            worker.shutdown_handle(),
            tokio::spawn(async move { worker.run().await.expect("worker") }),
        )
    };
    let w0 = start("w0");
    wait_for_leases(
        &store,
        "w0 holds all 6",
        Duration::from_secs(30),
        |leases| owners(leases).get("w0") == Some(&6),
    )
    .await;
    produce(&env, &stream.name, 0, 1_500).await;
    let w1 = start("w1");
    // Records keep coming while w1 asks for its three leases one take interval after another.
    produce(&env, &stream.name, 1_500, 1_500).await;
    wait_for_leases(&store, "3/3", Duration::from_secs(30), |leases| {
        let o = owners(leases);
        o.get("w0") == Some(&3)
            && o.get("w1") == Some(&3)
            && leases.iter().all(|l| l.checkpoint_owner.is_none())
    })
    .await;
    produce(&env, &stream.name, 3_000, 500).await;
    wait_for_distinct(&log, 3_500).await;
    for (handle, task) in [w1, w0] {
        handle.shutdown();
        task.await.expect("worker");
    }
    let snapshot = log.snapshot();
    let by_w1: std::collections::HashSet<&str> = snapshot
        .records
        .iter()
        .filter(|(w, _, _)| w == "w1")
        .map(|(_, s, _)| s.as_str())
        .collect();
    assert_eq!(by_w1.len(), 3, "w1 processed the three shards it took");
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, _, r) in &snapshot.records {
        *seen.entry(r.partition_key.as_ref()).or_default() += 1;
    }
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    assert_eq!(seen.len(), 3_500, "every record processed");
    assert_eq!(duplicates, 0, "a planned move processes nothing twice");
    assert_eq!(
        snapshot.lease_lost.len(),
        0,
        "no processor lost its lease: {:?}",
        snapshot.lease_lost
    );
}
