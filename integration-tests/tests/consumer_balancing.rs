//! Throughput-aware balancing against kinesis-mock and DynamoDB Local: one hot shard and eleven
//! cold ones on three workers settle with the hot shard's worker holding the fewest leases, no
//! lease moves for 20 take intervals afterwards, and a joining worker takes its share.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use integration_tests::consume::{
    DeliveryLog, TEST_FAILOVER, TEST_TAKE_INTERVAL, test_worker_config,
};
use integration_tests::{TestEnv, TestTable, random_name};
use kcl::leases::{DynamoDbLeaseStore, LeaseStore};
use kcl::{InitialPosition, Worker};

const SHARDS: usize = 12;
const FLOOR_KBPS: f64 = 50.0;

/// About 200 KiB/s into the first shard and 1 KiB/s into each other one, until aborted.
async fn traffic(kinesis: aws_sdk_kinesis::Client, stream: String) {
    let shards = kinesis
        .list_shards()
        .stream_name(&stream)
        .send()
        .await
        .unwrap()
        .shards
        .unwrap_or_default();
    let start = |i: usize| {
        shards[i]
            .hash_key_range()
            .map(|r| r.starting_hash_key().to_owned())
            .unwrap()
    };
    let entry = |key: String, size: usize| {
        PutRecordsRequestEntry::builder()
            .partition_key("k")
            .explicit_hash_key(key)
            .data(Blob::new(vec![b'x'; size]))
            .build()
            .unwrap()
    };
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        let mut entries: Vec<PutRecordsRequestEntry> =
            (0..20).map(|_| entry(start(0), 1024)).collect();
        entries.extend((1..shards.len()).map(|i| entry(start(i), 100)));
        let _ = kinesis
            .put_records()
            .stream_name(&stream)
            .set_records(Some(entries))
            .send()
            .await;
    }
}

/// Lease key → actual owner.
async fn owners(store: &DynamoDbLeaseStore) -> BTreeMap<String, String> {
    store
        .list()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|l| Some((l.key.clone(), l.actual_owner()?.to_owned())))
        .collect()
}

fn counts(owners: &BTreeMap<String, String>) -> BTreeMap<String, usize> {
    let mut c = BTreeMap::new();
    for o in owners.values() {
        *c.entry(o.clone()).or_insert(0) += 1;
    }
    c
}

async fn until(
    store: &DynamoDbLeaseStore,
    what: &str,
    limit: Duration,
    done: impl Fn(&BTreeMap<String, String>) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let now = owners(store).await;
        if done(&now) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{what} not within {limit:?}: {:?}",
            counts(&now)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_shard_settles_without_churn_and_a_joining_worker_takes_its_share() {
    integration_tests::log_capture::warnings_to_test_output();
    let env = TestEnv::new().await;
    let stream = env.create_stream(SHARDS as i32).await;
    let table = TestTable::adopt(&env, random_name("app"));
    let store = DynamoDbLeaseStore::new(env.dynamodb.clone(), table.name.clone());
    let hot_key = env
        .kinesis
        .list_shards()
        .stream_name(&stream.name)
        .send()
        .await
        .unwrap()
        .shards()[0]
        .shard_id()
        .to_owned();
    let load = tokio::spawn(traffic(env.kinesis.clone(), stream.name.clone()));
    let log = DeliveryLog::default();
    let start = |w: &str| {
        let worker = Worker::new(
            &env.sdk_config,
            &table.name,
            &stream.name,
            log.factory(w),
            test_worker_config(w, InitialPosition::Latest).balance_by_throughput(FLOOR_KBPS),
        );
        (
            worker.shutdown_handle(),
            tokio::spawn(async move { worker.run().await.expect("worker") }),
        )
    };
    let mut running: Vec<_> = ["a", "b", "c"].into_iter().map(start).collect();

    let hot_fewest = |o: &BTreeMap<String, String>| {
        let c = counts(o);
        o.len() == SHARDS
            && c.len() == 3
            && o.get(&hot_key).is_some_and(|hot_owner| {
                c.iter()
                    .filter(|(w, _)| *w != hot_owner)
                    .all(|(_, n)| *n > c[hot_owner])
            })
    };
    let settled_after = until(
        &store,
        "the hot shard's worker holding the fewest",
        Duration::from_secs(60),
        hot_fewest,
    )
    .await;
    // Settled: the same owners for 25 take intervals (hand-offs under way have landed, and
    // the throughputs have had a few smoothing time constants).
    let mut settled = owners(&store).await;
    let mut still = 0;
    while still < 25 {
        tokio::time::sleep(TEST_TAKE_INTERVAL).await;
        let now = owners(&store).await;
        still = if now == settled { still + 1 } else { 0 };
        settled = now;
    }
    let mut last = settled.clone();
    let mut moves = 0;
    for _ in 0..20 {
        tokio::time::sleep(TEST_TAKE_INTERVAL).await;
        let now = owners(&store).await;
        moves += now.iter().filter(|(k, o)| last.get(*k) != Some(*o)).count();
        last = now;
    }
    assert_eq!(moves, 0, "lease moves over 20 take intervals once settled");

    // A fourth worker joins. Its share of the load (a quarter of about 750 KiB/s, counting each
    // lease as at least the 50 KiB/s floor) is three cold leases, or the hot one alone.
    running.push(start("d"));
    let joined_at = Instant::now();
    let d_load = |leases: &[kcl::leases::Lease]| -> f64 {
        leases
            .iter()
            .filter(|l| l.actual_owner() == Some("d"))
            .map(|l| l.throughput_kbps.unwrap_or(0.0).max(FLOOR_KBPS))
            .sum()
    };
    loop {
        let leases = store.list().await.unwrap_or_default();
        if d_load(&leases) >= 3.0 * FLOOR_KBPS {
            break;
        }
        assert!(
            joined_at.elapsed() < Duration::from_secs(30),
            "the joining worker's load: {} KiB/s, leases {:?}",
            d_load(&leases),
            counts(&owners(&store).await)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let joined = joined_at.elapsed();
    // Three take intervals for three steals, plus the last one's hand-off: its owner's next
    // renewal (a third of the failover time), the new owner's poll, and slack for the emulators.
    let allowed = TEST_TAKE_INTERVAL * 3 + TEST_FAILOVER / 3 + Duration::from_millis(1_000);
    assert!(joined <= allowed, "its share after {joined:?}");
    eprintln!(
        "settled after {settled_after:?} at {:?}; 0 moves in 20 take intervals; a joining worker had its share after {joined:?} ({:.1} take intervals): {:?}",
        counts(&settled),
        joined.as_secs_f64() / TEST_TAKE_INTERVAL.as_secs_f64(),
        counts(&owners(&store).await)
    );
    load.abort();
    for (handle, task) in running {
        handle.shutdown();
        task.await.expect("worker");
    }
}
