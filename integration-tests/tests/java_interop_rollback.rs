//! (e) A rolling move back from our worker to the real Java KCL 3.1.3 (a roll-back after a
//! migration), on kinesis-mock and DynamoDB Local: the Java worker starts beside ours while ours
//! holds every lease and records keep coming; what Java's leader does with our leases meanwhile
//! is watched; then ours stops gracefully and Java takes over. Every record is delivered, none
//! twice across the two fleets, and Java starts each shard after our last checkpoint.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use integration_tests::consume::DeliveryLog;
use integration_tests::java_interop::{Put, as_put, java_puts, produce, rust_worker, setup};
use integration_tests::java_kcl::JavaKcl;
use integration_tests::java_kcl::rows::{checkpoint, owners, rows};
use kinesis_format::ExtendedSequenceNumber;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e_a_rolling_move_back_from_our_worker_to_the_java_kcl_repeats_nothing() {
    let (env, stream, app, _tables) = setup("java-e", 2).await;
    let mut all: Vec<Put> = produce(&env, &stream.name, 0..200, async || {}).await;
    let log = DeliveryLog::default();
    let worker = rust_worker(&env, &app, &stream.name, log.factory("rust-0"));
    let (stop, task) = integration_tests::consume::spawn_worker(worker);
    log.wait_for("ours reads the first 200", Duration::from_secs(60), |l| {
        l.records.len() >= 200
    })
    .await;

    // Java joins while ours holds both leases, and records keep coming.
    let mut java = JavaKcl::start(&env, &stream.name, &app, "java-0");
    let ours_only = |o: &BTreeMap<String, (String, Option<String>)>| {
        o.values()
            .all(|(owner, from)| owner == "rust-0" && from.is_none())
    };
    assert!(ours_only(&owners(&env, &app).await));
    all.extend(produce(&env, &stream.name, 200..400, async || {}).await);
    // Java's leader runs every second (InteropConsumer's leaseAssignmentIntervalMillis): 15 s
    // is fifteen chances to move a lease.
    let mut moves = 0;
    let mut last = owners(&env, &app).await;
    for _ in 0..150 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = owners(&env, &app).await;
        if now != last {
            moves += 1;
            last = now;
        }
    }
    let overlap = last.clone();

    // Ours stops gracefully (checkpoints, releases its leases); Java takes over.
    stop.shutdown();
    task.await.unwrap().expect("worker");
    let ours_checkpoints: BTreeMap<String, ExtendedSequenceNumber> = (rows(&env, &app).await)
        .iter()
        .filter_map(|(k, row)| Some((k.clone(), checkpoint(row)?)))
        .collect();
    let ours_count = log.snapshot().records.len();
    all.extend(produce(&env, &stream.name, 400..600, async || {}).await);
    let expected: HashSet<Put> = all.iter().cloned().collect();
    let ours: HashSet<Put> = (log.snapshot().records.iter())
        .map(|(_, _, r)| as_put(r))
        .collect();
    java.wait_for("the rest of the records", Duration::from_secs(120), |o| {
        let mut got = ours.clone();
        got.extend(java_puts(o));
        got.is_superset(&expected)
    })
    .await;
    java.terminate().await;

    let by_java = java.output();
    for d in &by_java.deliveries {
        if let Some(at) = ours_checkpoints.get(&d.shard) {
            assert!(
                d.position > *at,
                "{}: {} delivered by Java at or before our checkpoint {at}",
                d.shard,
                d.position
            );
        }
    }
    assert_eq!(
        ours_count + by_java.deliveries.len(),
        expected.len(),
        "every record exactly once across the two fleets (ours {ours_count}, Java {})",
        by_java.deliveries.len()
    );
    eprintln!(
        "java interop (e): {} records; ours delivered {ours_count}, then the Java KCL {}; none twice; while both ran for 15 s, Java's leader changed the lease table {moves} times (owners at the end: {overlap:?})",
        expected.len(),
        by_java.deliveries.len(),
    );
}
