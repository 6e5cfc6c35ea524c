//! The producer's ordered mode on the in-memory Kinesis, under tokio's paused clock: each key's
//! records are stored in put order through throttling and errors (with and without aggregation),
//! across a split under the producer's feet, and a shard at its write limit is kept at its rate.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use common::{stored_in_order, stream, warmed_up};
use kinesis_api::memory::{Faults, MemoryKinesis};
use kinesis_format::HashKey;
use kpl::{ProducerConfig, UserRecord};

/// Puts `n` records (40 keys, in bursts) while 30% of calls are throttled and 5% answer 500,
/// waits for all, and counts records stored after a record of their key that was put later.
async fn same_key_pairs_out_of_put_order(config: ProducerConfig, n: usize) -> usize {
    out_of_order_with(config, n, 4, None).await
}

/// A reshard of the in-memory stream.
type Reshard = fn(&MemoryKinesis);

fn split(kinesis: &MemoryKinesis) {
    let at = HashKey(u128::MAX / 2);
    kinesis
        .split_shard("s", "shardId-000000000000", at)
        .unwrap();
}

fn merge(kinesis: &MemoryKinesis) {
    let (a, b) = ("shardId-000000000000", "shardId-000000000001");
    kinesis.merge_shards("s", a, b).unwrap();
}

/// The same on `shards` shards, with a reshard after `reshard.0` records.
async fn out_of_order_with(
    config: ProducerConfig,
    n: usize,
    shards: u32,
    reshard: Option<(usize, Reshard)>,
) -> usize {
    let kinesis = stream(shards);
    let producer = warmed_up(&kinesis, config).await;
    kinesis.set_faults(Faults {
        throttle: 0.3,
        internal_error: 0.05,
        ..Faults::default()
    });
    let mut pending = Vec::new();
    for i in 0..n {
        let r = UserRecord::new("s", format!("key-{}", i % 40), Bytes::from(i.to_string()));
        pending.push(producer.put(r).await.unwrap());
        if i % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some((at, reshard)) = reshard
            && at == i
        {
            reshard(&kinesis);
        }
    }
    for (i, p) in pending.into_iter().enumerate() {
        p.await.unwrap_or_else(|e| panic!("record {i}: {e}"));
    }
    kinesis.set_faults(Faults::default());
    producer.shutdown().await;
    // Shards in lineage order (parents first); a record's place is its first stored copy (a
    // misplaced aggregate after a split is re-sent whole).
    let mut last: HashMap<String, usize> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    let mut out_of_order = 0;
    for (_, key, data) in stored_in_order(&kinesis, false).await {
        let Ok(i) = data.parse::<usize>() else {
            continue;
        };
        if !seen.insert(i) {
            continue;
        }
        if let Some(before) = last.insert(key, i)
            && before > i
        {
            out_of_order += 1;
        }
    }
    assert_eq!(seen.len(), n, "every record stored");
    out_of_order
}

#[tokio::test(start_paused = true)]
async fn ordered_mode_stores_each_keys_records_in_put_order_through_throttling_and_errors() {
    let config = || ProducerConfig::default().record_max_buffered_time(Duration::from_millis(20));
    let unordered = same_key_pairs_out_of_put_order(config(), 3_000).await;
    assert!(
        unordered > 0,
        "without ordered mode this fault mix reorders records"
    );
    let ordered = same_key_pairs_out_of_put_order(config().ordered(true), 3_000).await;
    eprintln!(
        "same-key records stored after a later one: {unordered} of 3,000 unordered, {ordered} ordered"
    );
    assert_eq!(ordered, 0, "ordered mode (unordered: {unordered} pairs)");
}

/// One record per round trip and shard, and a whole line waits out each back-off: fewer records
/// (3,000 would outlast the 30 s TTL under this fault mix).
#[tokio::test(start_paused = true)]
async fn ordered_mode_without_aggregation_too() {
    let config = ProducerConfig::default()
        .record_max_buffered_time(Duration::from_millis(20))
        .aggregation_enabled(false)
        .ordered(true);
    assert_eq!(same_key_pairs_out_of_put_order(config, 600).await, 0);
}

/// A shard at its write limit: ordered mode still sends at the shard's rate (a line never
/// waits in the collector for company while its shard is the bottleneck). 6 MB of 100 B records
/// on one shard of 1 MiB/s: about 6 s.
#[tokio::test(start_paused = true)]
async fn ordered_mode_keeps_a_rate_limited_shard_at_its_rate() {
    let kinesis = stream(1);
    let producer = warmed_up(&kinesis, ProducerConfig::default().ordered(true)).await;
    let started = tokio::time::Instant::now();
    let mut pending = Vec::new();
    for i in 0..60_000usize {
        let r = UserRecord::new("s", format!("key-{}", i % 40), Bytes::from(vec![b'x'; 100]));
        pending.push(producer.put(r).await.unwrap());
    }
    for p in pending {
        p.await.unwrap();
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(9), "6 MB took {took:?}");
    producer.shutdown().await;
}

/// A split, then (another run) a merge while producing: records of a key that goes to a child
/// are stored there only after every earlier record of the key (in a parent, or re-sent from a
/// misplaced aggregate).
#[tokio::test(start_paused = true)]
async fn ordered_mode_keeps_put_order_across_a_split_and_a_merge() {
    let config = || ProducerConfig::default().record_max_buffered_time(Duration::from_millis(20));
    for (what, shards, reshard) in [("split", 1, split as Reshard), ("merge", 2, merge)] {
        let event = Some((1_000, reshard));
        let unordered = out_of_order_with(config(), 3_000, shards, event).await;
        let ordered = out_of_order_with(config().ordered(true), 3_000, shards, event).await;
        eprintln!(
            "across a {what}: {unordered} of 3,000 out of put order unordered, {ordered} ordered"
        );
        assert_eq!(
            ordered, 0,
            "ordered mode across a {what} (unordered: {unordered})"
        );
    }
}
