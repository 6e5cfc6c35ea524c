//! The producer's dispatcher on the in-memory Kinesis, under tokio's paused clock: retries
//! through faults, TTL expiry, `fail_if_throttled`, flushing, shutdown draining, and a split under
//! a producer's feet (aggregates that landed in the wrong shard are re-sent). Each test reads
//! back what the stream holds, deaggregated and filtered by each shard's hash-key range as a
//! consumer would, instead of trusting the results.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{stored_in_order, stream, stream_with_limits, warmed_up};
use kinesis_api::memory::{Faults, MemoryKinesis, ShardLimits};
use kinesis_format::HashKey;
use kpl::{Producer, ProducerConfig, PutErrorKind, UserRecord};

fn record(i: usize) -> UserRecord {
    UserRecord::new("s", format!("key-{}", i % 50), Bytes::from(i.to_string()))
}

/// What a consumer would get: each record's data, with the shard it is read from. Sub-records
/// outside a shard's hash-key range are dropped, one by one as this crate's KCL drops them.
async fn readable(kinesis: &MemoryKinesis) -> HashMap<String, String> {
    read_back(kinesis, false).await
}

/// The same, but as the Java KCL reads: an aggregate with any sub-record outside the shard's
/// range is dropped whole (its issue 343).
async fn readable_by_java(kinesis: &MemoryKinesis) -> HashMap<String, String> {
    read_back(kinesis, true).await
}

async fn read_back(kinesis: &MemoryKinesis, whole_aggregates: bool) -> HashMap<String, String> {
    stored_in_order(kinesis, whole_aggregates)
        .await
        .into_iter()
        .map(|(shard, _, data)| (data, shard))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn errors_throttles_and_timeouts_are_retried_until_every_record_is_stored() {
    let kinesis = stream(4);
    let config = ProducerConfig::default().request_timeout(Duration::from_millis(500));
    let producer = warmed_up(&kinesis, config).await;
    kinesis.set_faults(Faults {
        internal_error: 0.3,
        throttle: 0.2,
        timeout: 0.05,
        timeout_after: Duration::from_secs(1),
    });
    let mut pending = Vec::new();
    for i in 0..500 {
        pending.push(producer.put(record(i)).await.unwrap());
    }
    for (i, p) in pending.into_iter().enumerate() {
        p.await.unwrap_or_else(|e| panic!("record {i}: {e}"));
    }
    kinesis.set_faults(Faults::default());
    let got = readable(&kinesis).await;
    let missing: Vec<usize> = (0..500)
        .filter(|i| !got.contains_key(&i.to_string()))
        .collect();
    assert!(
        missing.is_empty(),
        "reported stored, not readable: {missing:?}"
    );
    producer.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_record_refused_until_its_ttl_expires_is_certainly_not_stored() {
    let kinesis = stream(1);
    let config = ProducerConfig::default().record_ttl(Duration::from_secs(2));
    let producer = warmed_up(&kinesis, config).await;
    kinesis.set_faults(Faults {
        internal_error: 1.0,
        ..Faults::default()
    });
    let err = producer.put(record(1)).await.unwrap().await.unwrap_err();
    assert!(matches!(err.kind, PutErrorKind::Expired { .. }), "{err}");
    assert!(err.attempts.len() > 1, "retried until the TTL");
    kinesis.set_faults(Faults::default());
    assert_eq!(
        readable(&kinesis).await.len(),
        1,
        "only the warm-up is stored"
    );
    assert_eq!(producer.stats().indeterminate, 0);
    producer.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_record_whose_attempts_timed_out_or_lost_the_connection_is_indeterminate() {
    let kinesis = stream(1);
    let config = ProducerConfig::default().record_ttl(Duration::from_secs(2));
    let producer = warmed_up(&kinesis, config).await;
    kinesis.set_outage(true);
    let started = tokio::time::Instant::now();
    let err = producer.put(record(1)).await.unwrap().await.unwrap_err();
    assert!(
        matches!(err.kind, PutErrorKind::Indeterminate { .. }),
        "{err}"
    );
    assert_eq!(producer.stats().indeterminate, 1);
    assert!(!err.attempts.is_empty(), "it was tried");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(4),
        "expired at its TTL, not later: {waited:?}"
    );
    producer.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn fail_if_throttled_fails_throttled_records_instead_of_retrying() {
    // Far below what the producer's own limiter assumes a shard takes.
    let kinesis = stream_with_limits(
        1,
        ShardLimits {
            write_records: 5.0,
            ..ShardLimits::default()
        },
    );
    let config = ProducerConfig::default()
        .fail_if_throttled(true)
        .aggregation_enabled(false);
    let producer = warmed_up(&kinesis, config).await;
    let mut pending = Vec::new();
    for i in 0..200 {
        pending.push(producer.put(record(i)).await.unwrap());
    }
    let (mut stored, mut throttled) = (0, 0);
    for p in pending {
        match p.await {
            Ok(_) => stored += 1,
            Err(e) if matches!(e.kind, PutErrorKind::Throttled { .. }) => throttled += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(throttled > 0, "some were throttled");
    assert!(stored > 0, "the shard took some");
    assert_eq!(
        readable(&kinesis).await.len(),
        stored + 1,
        "exactly the stored ones (and the warm-up) are readable"
    );
    producer.shutdown().await;
}

/// A producer that would hold records for an hour, with 20 of them put.
async fn lingering(kinesis: &Arc<MemoryKinesis>) -> (Producer, Vec<kpl::PutFuture>) {
    let config = ProducerConfig::default().record_max_buffered_time(Duration::from_secs(3_600));
    let producer = Producer::with_kinesis(kinesis.clone(), config).unwrap();
    let mut pending = Vec::new();
    for i in 0..20 {
        pending.push(producer.put(record(i)).await.unwrap());
    }
    (producer, pending)
}

#[tokio::test(start_paused = true)]
async fn flush_and_wait_sends_what_would_otherwise_linger() {
    let kinesis = stream(2);
    let (producer, pending) = lingering(&kinesis).await;
    let before = tokio::time::Instant::now();
    producer.flush_and_wait().await;
    assert!(before.elapsed() < Duration::from_secs(60), "no lingering");
    assert_eq!(readable(&kinesis).await.len(), 20);
    for p in pending {
        p.await.unwrap();
    }
    producer.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_drains_every_pending_record() {
    let kinesis = stream(2);
    let (producer, pending) = lingering(&kinesis).await;
    producer.shutdown().await;
    for p in pending {
        p.await.unwrap();
    }
    assert_eq!(readable(&kinesis).await.len(), 20);
    assert!(
        producer.put(record(99)).await.is_err(),
        "nothing after shutdown"
    );
}

#[tokio::test(start_paused = true)]
async fn after_a_split_every_record_reported_stored_is_readable_by_any_kcl() {
    let kinesis = stream(1);
    let config = ProducerConfig::default().record_max_buffered_time(Duration::from_millis(100));
    let producer = warmed_up(&kinesis, config).await;
    kinesis
        .split_shard("s", "shardId-000000000000", HashKey(u128::MAX / 2))
        .unwrap();
    let mut pending = Vec::new();
    for i in 0..200 {
        pending.push(producer.put(record(i)).await.unwrap());
    }
    for p in pending {
        p.await.unwrap();
    }
    for (got, reader) in [
        (readable(&kinesis).await, "this crate's KCL"),
        (readable_by_java(&kinesis).await, "a Java KCL"),
    ] {
        let missing: Vec<usize> = (0..200)
            .filter(|i| !got.contains_key(&i.to_string()))
            .collect();
        assert!(
            missing.is_empty(),
            "reported stored, never readable by {reader}: {missing:?}"
        );
    }
    let stats = producer.stats();
    assert!(
        stats.wrong_shard_resent > 0 && stats.shard_map_refreshes > 0,
        "the stale shard map was noticed and aggregates re-sent: {stats:?}"
    );
    producer.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_explicit_hash_key_with_leading_zeros_is_refused_with_its_canonical_form() {
    let kinesis = stream(1);
    let producer = Producer::with_kinesis(kinesis.clone(), ProducerConfig::default()).unwrap();
    let err = producer
        .put(record(1).with_explicit_hash_key("007"))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("\"7\"") || err.to_string().contains("(7)"),
        "{err}"
    );
    producer
        .put(record(2).with_explicit_hash_key("7"))
        .await
        .unwrap()
        .await
        .unwrap();
    producer.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_slow_endpoint_gets_fewer_calls_in_flight_and_more_once_it_recovers() {
    let kinesis = stream(8);
    let producer = warmed_up(&kinesis, ProducerConfig::default()).await;
    assert_eq!(producer.stats().concurrency_limit, 24);
    // Half of the calls hang past the 6 s request timeout, for a minute.
    kinesis.set_faults(Faults {
        timeout: 0.5,
        timeout_after: Duration::from_secs(10),
        ..Faults::default()
    });
    let mut pending = Vec::new();
    let mut lowest = u64::MAX;
    for i in 0..6_000 {
        pending.push(producer.put(record(i)).await.unwrap());
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            lowest = lowest.min(producer.stats().concurrency_limit);
        }
    }
    kinesis.set_faults(Faults::default());
    let (mut stored, mut unknown) = (0, 0);
    for p in pending {
        match p.await {
            Ok(_) => stored += 1,
            Err(e) if matches!(e.kind, PutErrorKind::Indeterminate { .. }) => unknown += 1,
            Err(e) => panic!("only stored or indeterminate: {e}"),
        }
    }
    assert!(
        lowest <= 3,
        "cut while calls timed out: lowest limit {lowest}"
    );
    let after = producer.stats().concurrency_limit;
    assert!(after > lowest, "regained after: {after} (lowest {lowest})");
    assert_eq!(stored + unknown, 6_000);
    assert_eq!(
        readable(&kinesis).await.len(),
        stored + 1,
        "the stored ones and the warm-up"
    );
    producer.shutdown().await;
}
