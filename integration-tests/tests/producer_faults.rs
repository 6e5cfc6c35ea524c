//! The producer through a fault-injecting proxy: throttling, 5xx and resets are retried until
//! every record is stored; `fail_if_throttled` fails throttled records at once; a black-holed
//! endpoint expires every record within its TTL; full memory bounds make `put` wait and `try_put`
//! refuse. With the defaults, a fault mix that includes calls answered after the request timeout
//! (done, but given up on) loses nothing and stores few duplicates.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use integration_tests::TestEnv;
use integration_tests::check::{Put, verify_stream};
use integration_tests::fault_proxy::Faults;
use integration_tests::read::all_records;
use kpl::{Producer, ProducerConfig, PutErrorKind, SubmitErrorKind, UserRecord};
use rand::Rng;

fn record(stream: &str, i: usize, len: usize) -> UserRecord {
    let mut data = vec![0u8; len];
    rand::rng().fill(&mut data[..]);
    UserRecord::new(stream, format!("key-{i}"), data)
}

/// Quick retries for tests; calls and records live long enough for the slow emulator.
fn patient() -> ProducerConfig {
    ProducerConfig::default()
        .retry_base_delay(Duration::from_millis(10))
        .retry_max_delay(Duration::from_millis(200))
        .max_concurrent_requests(2)
        .request_timeout(Duration::from_secs(30))
        .record_ttl(Duration::from_secs(300))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_5xx_and_resets_are_retried_until_every_record_is_stored() {
    let env = TestEnv::new().await;
    let stream = env.create_stream(4).await;
    let proxy = env
        .fault_proxy(Faults {
            throttle_entries: 0.30,
            internal_error_calls: 0.05,
            reset_calls: 0.01,
            stall_put_records: false,
            ..Faults::default()
        })
        .await;
    // Small aggregates (~9 records) and calls of 3 make ~185 calls, so that a 5% fault shows
    // (the chance of none is 0.95^185 < 1e-4).
    let config = patient()
        .collection_max_count(3)
        .aggregation_max_size(2 * 1024);
    let producer =
        Producer::with_client(&env.kinesis_client_at(&proxy.url), config).expect("producer");

    let mut futures = Vec::new();
    for i in 0..5_000 {
        let r = record(&stream.name, i, 200);
        let (partition_key, data) = (r.partition_key().to_owned(), r.data().clone());
        futures.push((
            partition_key,
            data,
            producer.put(r).await.expect("accepted"),
        ));
    }
    let mut puts = Vec::new();
    let mut retried = 0;
    for (partition_key, data, f) in futures {
        let outcome = f
            .await
            .unwrap_or_else(|e| panic!("record failed despite retries: {e}"));
        if outcome.attempts().len() > 1 {
            retried += 1;
            let failed = &outcome.attempts()[..outcome.attempts().len() - 1];
            assert!(
                failed.iter().all(|a| a.error.is_some()),
                "every attempt but the last has an error"
            );
        }
        assert!(outcome.attempts().last().is_some_and(|a| a.error.is_none()));
        puts.push(Put {
            partition_key,
            data,
            outcome,
        });
    }
    let counts = &proxy.counts;
    let (throttled, internal, resets) = (
        counts.throttled_entries.load(Ordering::Relaxed),
        counts.internal_errors.load(Ordering::Relaxed),
        counts.resets.load(Ordering::Relaxed),
    );
    let stats = producer.stats();
    eprintln!(
        "injected: {throttled} throttled entries, {internal} 500s, {resets} resets; {retried} user records retried; stats {stats:?}"
    );
    assert!(throttled > 0 && internal > 0, "faults were injected");
    assert!(retried > 0, "some records needed more than one attempt");
    assert!(stats.retries > 0 && stats.throttled > 0);
    producer.shutdown().await;
    // Faults never stored anything: the stream holds every record exactly once.
    verify_stream(&stream, &puts).await;
}

#[tokio::test]
async fn fail_if_throttled_fails_throttled_records_at_once_with_the_record() {
    let env = TestEnv::new().await;
    let stream = env.create_stream(2).await;
    let proxy = env
        .fault_proxy(Faults {
            throttle_entries: 0.30,
            ..Faults::default()
        })
        .await;
    let config = patient().fail_if_throttled(true).aggregation_enabled(false);
    let producer =
        Producer::with_client(&env.kinesis_client_at(&proxy.url), config).expect("producer");
    let mut futures = Vec::new();
    for i in 0..400 {
        let r = record(&stream.name, i, 50);
        futures.push((r.clone(), producer.put(r).await.expect("accepted")));
    }
    let (mut ok, mut throttled) = (Vec::new(), 0);
    for (sent, f) in futures {
        match f.await {
            Ok(outcome) => {
                assert_eq!(outcome.attempts().len(), 1);
                ok.push(Put {
                    partition_key: sent.partition_key().to_owned(),
                    data: sent.data().clone(),
                    outcome,
                });
            }
            Err(e) => {
                assert!(matches!(e.kind, PutErrorKind::Throttled { .. }), "{e}");
                assert_eq!(e.attempts.len(), 1, "failed at once, no retry");
                assert_eq!(*e.record, sent, "the record comes back");
                throttled += 1;
            }
        }
    }
    let injected = proxy.counts.throttled_entries.load(Ordering::Relaxed) as usize;
    assert!(throttled > 0);
    assert_eq!(throttled, injected, "exactly the throttled records failed");
    producer.shutdown().await;
    verify_stream(&stream, &ok).await;
}

#[tokio::test]
async fn a_black_holed_endpoint_expires_every_record_within_its_ttl() {
    let env = TestEnv::new().await;
    let stream = env.create_stream(1).await;
    let proxy = env
        .fault_proxy(Faults {
            stall_put_records: true,
            ..Faults::default()
        })
        .await;
    let ttl = Duration::from_secs(2);
    let config = ProducerConfig::default()
        .record_ttl(ttl)
        .request_timeout(Duration::from_millis(500))
        .retry_base_delay(Duration::from_millis(50));
    let producer =
        Producer::with_client(&env.kinesis_client_at(&proxy.url), config).expect("producer");
    let started = Instant::now();
    let mut futures = Vec::new();
    for i in 0..200 {
        let r = record(&stream.name, i, 100);
        futures.push((r.clone(), producer.put(r).await.expect("accepted")));
    }
    let margin = Duration::from_secs(2);
    for (sent, f) in futures {
        let result = tokio::time::timeout_at((started + ttl + margin).into(), f)
            .await
            .expect("every record resolves within record_ttl + margin");
        let e = result.expect_err("nothing can be stored through a black hole");
        // Every attempt timed out: the producer cannot know that the proxy swallowed them.
        assert!(matches!(e.kind, PutErrorKind::Indeterminate { .. }), "{e}");
        assert!(
            e.to_string().contains("Timeout"),
            "says what went wrong: {e}"
        );
        assert_eq!(*e.record, sent);
        assert!(!e.attempts.is_empty());
    }
    assert!(started.elapsed() >= ttl, "no record expired early");
    assert!(proxy.counts.stalled.load(Ordering::Relaxed) > 0);
    let stats = producer.stats();
    assert_eq!(stats.expired, 200);
    assert_eq!(stats.outstanding_records, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_bounds_make_put_wait_and_try_put_refuse() {
    let env = TestEnv::new().await;
    let stream = env.create_stream(1).await;
    let proxy = env
        .fault_proxy(Faults {
            stall_put_records: true,
            ..Faults::default()
        })
        .await;
    let bound = 1024 * 1024;
    let config = ProducerConfig::default()
        .max_outstanding_bytes(bound)
        .request_timeout(Duration::from_secs(1))
        .retry_base_delay(Duration::from_millis(10))
        .retry_max_delay(Duration::from_millis(100))
        .record_ttl(Duration::from_secs(120));
    let producer =
        Producer::with_client(&env.kinesis_client_at(&proxy.url), config).expect("producer");
    let size = record(&stream.name, 100, 10_000).size();
    let fit = bound / size;

    let mut futures = Vec::new();
    for i in 0..fit {
        let r = record(&stream.name, 100 + i, 10_000);
        futures.push(producer.try_put(r).await.expect("fits under the bound"));
    }
    let stats = producer.stats();
    assert_eq!(stats.outstanding_bytes as usize, fit * size);
    assert!(stats.outstanding_bytes as usize <= bound);

    let extra = record(&stream.name, 99, 10_000);
    let refused = producer.try_put(extra.clone()).await.expect_err("full");
    assert!(
        matches!(refused.kind, SubmitErrorKind::Full { what: "bytes" }),
        "{}",
        refused
    );
    assert_eq!(*refused.record, extra);

    // put waits while the endpoint is stalled...
    let waiting = {
        let producer = producer.clone();
        tokio::spawn(async move { producer.put(extra).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "put must wait while the producer is full"
    );
    assert!(producer.stats().outstanding_bytes as usize <= bound);

    // ...and goes through once the endpoint answers again.
    proxy.set_faults(Faults::default());
    let last = tokio::time::timeout(Duration::from_secs(60), waiting)
        .await
        .expect("put proceeds once capacity frees")
        .expect("task")
        .expect("accepted");
    futures.push(last);
    for f in futures {
        f.await.unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(producer.stats().outstanding_bytes, 0);
    producer.shutdown().await;
}

/// Seen before the fix, with the defaults: 160,392 of 200,000 records failed as `Expired` (153,400
/// of them stored), and 197,209 duplicate copies. Here: 20 s of puts at 1,000 records/s through
/// 30% throttled entries, 5% HTTP 500, 1% resets and 1% of calls done but answered 8 s late
/// (past the 6 s request timeout); then the faults stop and the backlog drains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_defaults_slow_and_failing_calls_lose_nothing_and_store_few_duplicates() {
    const N: usize = 20_000;
    let env = TestEnv::new().await;
    let stream = env.create_stream(4).await;
    let faults = Faults {
        throttle_entries: 0.30,
        internal_error_calls: 0.05,
        reset_calls: 0.01,
        slow_put_records: 0.01,
        slow_answer_for: Duration::from_secs(8),
        ..Faults::default()
    };
    let proxy = env.fault_proxy(faults).await;
    let producer = Producer::with_client(
        &env.kinesis_client_at(&proxy.url),
        ProducerConfig::default(),
    )
    .expect("producer");
    let started = Instant::now();
    let mut futures = Vec::with_capacity(N);
    for i in 0..N {
        futures.push(
            producer
                .put(record(&stream.name, i, 100))
                .await
                .expect("accepted"),
        );
        if i % 100 == 99 {
            tokio::time::sleep_until((started + Duration::from_millis(i as u64 + 1)).into()).await;
        }
    }
    proxy.set_faults(Faults::default());
    let (mut stored, mut expired, mut indeterminate) = (Vec::new(), Vec::new(), 0usize);
    let resolved = tokio::time::timeout(Duration::from_secs(120), async {
        for (i, f) in futures.into_iter().enumerate() {
            match f.await {
                Ok(outcome) => stored.push((i, outcome)),
                Err(e) if matches!(e.kind, PutErrorKind::Expired { .. }) => expired.push(i),
                Err(e) if matches!(e.kind, PutErrorKind::Indeterminate { .. }) => {
                    indeterminate += 1
                }
                Err(e) => panic!("record {i}: only stored, expired or indeterminate: {e}"),
            }
        }
    })
    .await;
    assert!(
        resolved.is_ok(),
        "every future resolves once the faults stop"
    );
    let drained = started.elapsed();
    let stats = producer.stats();
    producer.shutdown().await;

    // Copies of each record in the stream (partition keys are unique).
    let mut copies: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (_, range, records) in all_records(&stream).await {
        for r in records.iter().filter(|r| range.contains(r.hash_key())) {
            *copies.entry(r.partition_key.clone()).or_default() += 1;
        }
    }
    let count = |i: usize| copies.get(&format!("key-{i}")).copied().unwrap_or(0);
    let lost: Vec<usize> = stored
        .iter()
        .map(|(i, _)| *i)
        .filter(|i| count(*i) == 0)
        .collect();
    let expired_but_stored = expired.iter().filter(|i| count(**i) > 0).count();
    let duplicates: usize = copies.values().map(|c| c - 1).sum();
    let c = &proxy.counts;
    eprintln!(
        "{N} records: {} stored, {} expired, {indeterminate} indeterminate, {duplicates} duplicate copies, drained after {drained:?}; injected {} throttled entries, {} 500s, {} resets, {} late answers holding {} user records; concurrency limit at the end {}; stats {stats:?}",
        stored.len(),
        expired.len(),
        c.throttled_entries.load(Ordering::Relaxed),
        c.internal_errors.load(Ordering::Relaxed),
        c.resets.load(Ordering::Relaxed),
        c.slow.load(Ordering::Relaxed),
        c.slow_user_records.load(Ordering::Relaxed),
        stats.concurrency_limit,
    );
    assert!(c.slow.load(Ordering::Relaxed) > 0, "some answers came late");
    assert!(
        lost.is_empty(),
        "reported stored, not in the stream: {lost:?}"
    );
    assert_eq!(
        expired_but_stored, 0,
        "an Expired record is certainly not stored"
    );
    // Every duplicate comes from a call the proxy did upstream and answered after the producer
    // had given up on it: at most one extra copy per record such a call stored, and none from
    // anywhere else (the producer's own account agrees: each is an attempt whose outcome it
    // reports as unknown). How many records the late calls carry is chance: a late call in a
    // backlog carries many aggregates (measured: 5 to 276 records in 2 to 11 late calls locally,
    // 2,314 in 7 late calls on a loaded 2-core CI machine), so the bound is that count, not a
    // share of N. Without the concurrency cut the same faults made 5,764 calls; the bounds on
    // calls and on indeterminate outcomes below catch a storm.
    let late_records = c.slow_user_records.load(Ordering::Relaxed) as usize;
    assert!(
        duplicates <= late_records,
        "{duplicates} duplicate copies, but the calls answered late stored only {late_records} records"
    );
    let unknown_attempts: usize = stored
        .iter()
        .map(|(_, o)| {
            o.attempts()
                .iter()
                .filter(|a| a.error.as_ref().is_some_and(|e| e.outcome_unknown()))
                .count()
        })
        .sum();
    assert!(
        duplicates <= unknown_attempts + indeterminate,
        "{duplicates} duplicates, only {unknown_attempts} attempts with an unknown outcome"
    );
    assert!(indeterminate * 100 <= N, "indeterminate {indeterminate}");
    assert!(
        stats.put_records_calls * 10 <= N as u64,
        "a storm of calls: {}",
        stats.put_records_calls
    );
}
