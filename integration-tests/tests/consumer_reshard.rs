//! Splitting one shard and merging two adjacent shards while producing: every stored copy of a
//! record is processed exactly once (the producer stores a second copy of the records of an
//! aggregate that landed on a shard not owning all of them, and counts them), and for every partition key all records of a parent shard are processed before
//! any record of its children (splits AND merges), whatever the initial position: children of a
//! shard that has a lease start at TRIM_HORIZON after their parents, also under `Latest` and
//! `AtTimestamp`. Each case runs polling and through enhanced fan-out.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use integration_tests::consume::{DeliveryLog, test_worker_config};
use integration_tests::read::shard_range;
use integration_tests::{TestEnv, TestStream, TestTable, random_name};
use kcl::leases::{DynamoDbLeaseStore, LeaseStore};
use kcl::{InitialPosition, Worker};
use kinesis_format::HashKey;
use kpl::{Producer, UserRecord};

const KEYS: usize = 60;

async fn produce(producer: &Producer, stream: &TestStream, phase: &str, n: usize) {
    let mut futures = Vec::new();
    for i in 0..n {
        let record = UserRecord::new(
            stream.name.as_str(),
            format!("key-{}", i % KEYS),
            Bytes::from(format!("{phase}-{i}")),
        );
        futures.push(producer.put(record).await.expect("accepted"));
    }
    for f in futures {
        f.await.expect("stored");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parents_are_processed_before_children_after_a_split_and_a_merge() {
    integration_tests::log_capture::warnings_to_test_output();
    split_and_merge(InitialPosition::TrimHorizon, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_enhanced_fan_out_parents_are_processed_before_children_too() {
    integration_tests::log_capture::warnings_to_test_output();
    split_and_merge(InitialPosition::TrimHorizon, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_latest_too_parents_come_before_children_and_no_child_record_is_skipped() {
    integration_tests::log_capture::warnings_to_test_output();
    split_and_merge(InitialPosition::Latest, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_enhanced_fan_out_under_latest_too() {
    integration_tests::log_capture::warnings_to_test_output();
    split_and_merge(InitialPosition::Latest, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_latest_a_split_while_no_worker_runs_loses_nothing_and_keeps_the_order() {
    split_while_no_worker_runs(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_enhanced_fan_out_a_split_while_no_worker_runs_loses_nothing_too() {
    split_while_no_worker_runs(true).await;
}

/// `fan_out`: read through enhanced fan-out instead of polling.
async fn split_while_no_worker_runs(fan_out: bool) {
    integration_tests::log_capture::warnings_to_test_output();
    let env = TestEnv::new().await;
    let stream = env.create_stream(2).await;
    let table = TestTable::adopt(&env, random_name("app"));
    let log = DeliveryLog::default();
    let worker = || {
        Worker::new(
            &env.sdk_config,
            &table.name,
            &stream.name,
            log.factory("w"),
            if fan_out {
                test_worker_config("w", InitialPosition::Latest).enhanced_fan_out(&table.name)
            } else {
                test_worker_config("w", InitialPosition::Latest)
            },
        )
    };
    let producer =
        Producer::new(&env.sdk_config, kpl::ProducerConfig::default()).expect("producer");
    let w = worker();
    let handle = w.shutdown_handle();
    let task = tokio::spawn(async move { w.run().await.expect("worker") });
    log.wait_for("both shards reading", Duration::from_secs(30), |l| {
        l.initialized.len() >= 2
    })
    .await;
    produce(&producer, &stream, "live", 300).await;
    log.wait_for("the live records", Duration::from_secs(30), |l| {
        l.records.len() >= 300
    })
    .await;
    handle.shutdown();
    task.await.expect("worker task");

    // While no worker runs: records into the parents, a split, records into the children.
    produce(&producer, &stream, "down-before-split", 300).await;
    let low = stream.open_shards().await[0].clone();
    let range = shard_range(&low);
    env.kinesis
        .split_shard()
        .stream_name(&stream.name)
        .shard_to_split(low.shard_id())
        .new_starting_hash_key(
            HashKey(range.start.0 + (range.end.0 - range.start.0) / 2).to_string(),
        )
        .send()
        .await
        .expect("SplitShard");
    env.wait_stream_active(&stream.name).await;
    produce(&producer, &stream, "down-after-split", 300).await;
    let resent = producer.stats().wrong_shard_resent;
    producer.shutdown().await;

    // The restarted worker finds children of leased shards: they start after their parents.
    let w = worker();
    let handle = w.shutdown_handle();
    let task = tokio::spawn(async move { w.run().await.expect("worker") });
    log.wait_for("all 900 records", Duration::from_secs(30), |l| {
        distinct(&l.records) >= 900
    })
    .await;
    handle.shutdown();
    task.await.expect("worker task");
    let snapshot = log.snapshot();
    assert_once_per_stored_copy(&snapshot.records, 900, resent, "restart after a split");
    // About half the keys live on the split shard.
    assert_parents_first(
        &stream,
        &snapshot.records,
        "restart after a split",
        KEYS / 4,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_at_timestamp_too_parents_come_before_children() {
    integration_tests::log_capture::warnings_to_test_output();
    split_and_merge(
        InitialPosition::AtTimestamp(std::time::SystemTime::now()),
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_enhanced_fan_out_under_at_timestamp_too() {
    integration_tests::log_capture::warnings_to_test_output();
    split_and_merge(
        InitialPosition::AtTimestamp(std::time::SystemTime::now()),
        true,
    )
    .await;
}

/// `fan_out`: read through enhanced fan-out instead of polling.
async fn split_and_merge(position: InitialPosition, fan_out: bool) {
    let env = TestEnv::new().await;
    let stream = env.create_stream(2).await;
    let table = TestTable::adopt(&env, random_name("app"));
    let log = DeliveryLog::default();
    let config = test_worker_config("w", position)
        .shard_sync_interval(Duration::from_millis(200))
        .lease_cleanup_interval(Duration::from_millis(200));
    let config = if fan_out {
        config.enhanced_fan_out(&table.name)
    } else {
        config
    };
    let worker = Worker::new(
        &env.sdk_config,
        &table.name,
        &stream.name,
        log.factory("w"),
        config,
    );
    let handle = worker.shutdown_handle();
    let task = tokio::spawn(async move { worker.run().await.expect("worker") });
    let producer =
        Producer::new(&env.sdk_config, kpl::ProducerConfig::default()).expect("producer");
    // Under Latest, only what is written after reading started is delivered.
    log.wait_for("both shards reading", Duration::from_secs(30), |l| {
        l.initialized.len() >= 2
    })
    .await;

    produce(&producer, &stream, "before", 600).await;
    let shards = stream.open_shards().await;
    let (low, high) = (shards[0].clone(), shards[1].clone());
    let low_range = shard_range(&low);
    let middle = HashKey(low_range.start.0 + (low_range.end.0 - low_range.start.0) / 2);
    env.kinesis
        .split_shard()
        .stream_name(&stream.name)
        .shard_to_split(low.shard_id())
        .new_starting_hash_key(middle.to_string())
        .send()
        .await
        .expect("SplitShard");
    env.wait_stream_active(&stream.name).await;
    produce(&producer, &stream, "split", 600).await;

    // Merge the split's upper child with the old high shard (adjacent ranges).
    let upper_child = stream
        .open_shards()
        .await
        .into_iter()
        .find(|s| s.parent_shard_id() == Some(low.shard_id()) && shard_range(s).start == middle)
        .expect("upper child");
    env.kinesis
        .merge_shards()
        .stream_name(&stream.name)
        .shard_to_merge(upper_child.shard_id())
        .adjacent_shard_to_merge(high.shard_id())
        .send()
        .await
        .expect("MergeShards");
    env.wait_stream_active(&stream.name).await;
    produce(&producer, &stream, "merged", 600).await;
    let resent = producer.stats().wrong_shard_resent;
    producer.shutdown().await;

    log.wait_for("all 1,800 records", Duration::from_secs(60), |l| {
        distinct(&l.records) >= 1_800
    })
    .await;

    // The finished parents' leases are cleaned up once their children started, and shard sync
    // (every 200 ms) does not bring them back.
    let open: HashSet<String> = stream
        .open_shards()
        .await
        .iter()
        .map(|s| s.shard_id().to_owned())
        .collect();
    let store = DynamoDbLeaseStore::new(env.dynamodb.clone(), table.name.clone());
    let lease_keys = || async {
        store
            .list()
            .await
            .expect("leases")
            .into_iter()
            .map(|l| l.key)
            .collect::<HashSet<String>>()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while lease_keys().await != open {
        assert!(
            tokio::time::Instant::now() < deadline,
            "parents not cleaned up: {:?} vs open {open:?}",
            lease_keys().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        lease_keys().await,
        open,
        "a cleaned-up parent lease came back"
    );
    handle.shutdown();
    task.await.expect("worker task");

    let snapshot = log.snapshot();
    assert_once_per_stored_copy(&snapshot.records, 1_800, resent, &format!("{position:?}"));
    let shards = stream.shards().await;
    let merged = shards
        .iter()
        .any(|s| s.adjacent_parent_shard_id().is_some());
    assert!(merged, "the stream has a merged shard");
    assert_parents_first(
        &stream,
        &snapshot.records,
        &format!("{position:?}"),
        KEYS + 1,
    )
    .await;
}

/// How many distinct records were delivered.
fn distinct(records: &[(String, String, kcl::ConsumerRecord)]) -> usize {
    records
        .iter()
        .map(|(_, _, r)| &r.data)
        .collect::<HashSet<_>>()
        .len()
}

/// Every stored copy delivered exactly once, `n` records in all, and a record delivered
/// from two copies only as often as the producer re-sent one after the reshard.
fn assert_once_per_stored_copy(
    records: &[(String, String, kcl::ConsumerRecord)],
    n: usize,
    resent: u64,
    what: &str,
) {
    let mut copies: HashMap<(&str, kinesis_format::ExtendedSequenceNumber), usize> = HashMap::new();
    for (_, shard, r) in records {
        *copies.entry((shard.as_str(), r.position())).or_default() += 1;
    }
    let repeated: Vec<_> = copies.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "{what}: delivered more than once: {repeated:?}"
    );
    assert_eq!(distinct(records), n, "{what}: every record processed");
    let second = (records.len() - n) as u64;
    assert!(
        second <= resent,
        "{what}: {second} records delivered from a second stored copy, {resent} re-sent"
    );
}

/// For every partition key, every record of a shard is delivered after the last record of each
/// of its ancestors (by the stream's own parent links).
async fn assert_parents_first(
    stream: &TestStream,
    records: &[(String, String, kcl::ConsumerRecord)],
    what: &str,
    min_checked: usize,
) {
    let mut parents: HashMap<String, Vec<String>> = HashMap::new();
    for s in stream.shards().await {
        let p: Vec<String> = s
            .parent_shard_id()
            .into_iter()
            .chain(s.adjacent_parent_shard_id())
            .map(str::to_owned)
            .collect();
        parents.insert(s.shard_id().to_owned(), p);
    }
    let ancestors = |shard: &str| -> HashSet<String> {
        let mut out = HashSet::new();
        let mut todo = vec![shard.to_owned()];
        while let Some(s) = todo.pop() {
            for p in parents.get(&s).cloned().unwrap_or_default() {
                if out.insert(p.clone()) {
                    todo.push(p);
                }
            }
        }
        out
    };
    // For each key: the delivery index of its last record per shard, and its first per shard.
    let mut first: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let mut last: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for (i, (_, shard, r)) in records.iter().enumerate() {
        first
            .entry((r.partition_key.as_ref(), shard.as_str()))
            .or_insert(i);
        last.insert((r.partition_key.as_ref(), shard.as_str()), i);
    }
    let mut checked = 0;
    for ((key, child), first_in_child) in &first {
        for ancestor in ancestors(child) {
            if let Some(last_in_parent) = last.get(&(*key, ancestor.as_str())) {
                assert!(
                    last_in_parent < first_in_child,
                    "{what}: {key}: a record of {child} was processed before the last record of its ancestor {ancestor}"
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked >= min_checked,
        "{what}: the ordering was checked across resharding ({checked} key/parent pairs)"
    );
}
