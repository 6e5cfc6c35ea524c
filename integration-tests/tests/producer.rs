//! The producer against kinesis-mock: everything put is stored exactly once on the right shard and
//! every result points at its record; bad input is refused with the record back; shutdown
//! resolves every future.

use std::time::{Duration, Instant};

use bytes::Bytes;
use integration_tests::TestEnv;
use integration_tests::check::{Put, verify_stream};
use kpl::{Producer, ProducerConfig, SubmitErrorKind, UserRecord};
use rand::{Rng, SeedableRng, rngs::StdRng};

/// How many user records the volume test puts (the issue asks for 200,000; override with
/// `KPL_IT_RECORDS` for a quicker local run).
fn volume() -> usize {
    std::env::var("KPL_IT_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000)
}

fn random_record(rng: &mut StdRng, stream: &str) -> UserRecord {
    let len = rng.random_range(10..=2048);
    let mut data = vec![0u8; len];
    rng.fill(&mut data[..]);
    UserRecord::new(stream, format!("pk-{:x}", rng.random::<u64>()), data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_is_stored_once_on_its_shard_and_results_point_at_it() {
    let env = TestEnv::new().await;
    let stream = env.create_stream(4).await;
    // kinesis-mock serves one call at a time at about 2 MB/s: a few calls in flight with a long
    // timeout, so that no call times out after being stored (a retry would then duplicate it).
    let config = ProducerConfig::default()
        .max_concurrent_requests(2)
        .request_timeout(Duration::from_secs(60))
        .record_ttl(Duration::from_secs(600));
    let producer = Producer::new(&env.sdk_config, config).expect("producer");
    let mut rng = StdRng::seed_from_u64(rand::rng().random());
    let n = volume();

    let started = Instant::now();
    let mut pending = Vec::with_capacity(n);
    for _ in 0..n {
        let record = random_record(&mut rng, &stream.name);
        let (pk, data) = (record.partition_key().to_owned(), record.data().clone());
        pending.push((pk, data, producer.put(record).await.expect("accepted")));
    }
    let mut puts = Vec::with_capacity(n);
    for (partition_key, data, future) in pending {
        let outcome = future
            .await
            .unwrap_or_else(|e| panic!("record failed: {e}"));
        puts.push(Put {
            partition_key,
            data,
            outcome,
        });
    }
    let elapsed = started.elapsed();
    let stats = producer.stats();
    eprintln!(
        "{n} user records in {elapsed:?}: {} Kinesis records, {} PutRecords calls, {} retries",
        stats.kinesis_records_put, stats.put_records_calls, stats.retries
    );
    assert_eq!(stats.user_records_put, n as u64);
    assert_eq!(stats.outstanding_records, 0);
    assert_eq!(stats.outstanding_bytes, 0);
    assert!(
        stats.kinesis_records_put < n as u64 / 5,
        "records were aggregated"
    );
    assert!(puts.iter().any(|p| p.outcome.aggregated()));
    producer.shutdown().await;

    let read = verify_stream(&stream, &puts).await;
    assert_eq!(read.delivered, n);
    assert_eq!(
        read.filtered, 0,
        "no reshard, so no aggregate can hold a misplaced record"
    );
}

#[tokio::test]
async fn bad_input_is_refused_with_a_message_and_the_record_back() {
    let env = TestEnv::new().await;
    let stream = env.create_stream(1).await;
    let config = ProducerConfig::default().max_user_record_size(1024);
    let producer = Producer::new(&env.sdk_config, config).expect("producer");
    let s = stream.name.as_str();
    let over_2_128 = "340282366920938463463374607431768211456";
    let cases: Vec<(UserRecord, &str)> = vec![
        (UserRecord::new(s, "", "x"), "partition key is empty"),
        (UserRecord::new(s, "k".repeat(257), "x"), "257 characters"),
        (
            UserRecord::new(s, "k", "x").with_explicit_hash_key("12ab"),
            "not a decimal integer",
        ),
        (
            UserRecord::new(s, "k", "x").with_explicit_hash_key(over_2_128),
            "larger than 2^128-1",
        ),
        (
            UserRecord::new(s, "k", vec![0u8; 1024]),
            "the limit is 1024 bytes",
        ),
        (UserRecord::new("", "k", "x"), "stream name is empty"),
        (
            UserRecord::new(format!("{s}-missing"), "k", "x"),
            "does not exist",
        ),
    ];
    for (record, expected) in cases {
        let sent = record.clone();
        let err = match producer.put(record).await {
            Ok(_) => panic!("{sent:?} was accepted"),
            Err(err) => err,
        };
        let message = err.to_string();
        assert!(
            message.contains(expected),
            "{message:?} should say {expected:?}"
        );
        assert_eq!(*err.record, sent, "the record comes back unchanged");
        if expected == "does not exist" {
            assert!(matches!(err.kind, SubmitErrorKind::StreamNotFound { .. }));
        }
    }
    let stats = producer.stats();
    assert_eq!(stats.user_records_received, 0, "nothing was enqueued");
    assert_eq!(stats.outstanding_records, 0);
    // A valid record still goes through afterwards.
    let ok = producer
        .put(UserRecord::new(s, "k", "fine"))
        .await
        .expect("accepted")
        .await;
    assert!(ok.is_ok(), "{ok:?}");
    producer.shutdown().await;
}

#[tokio::test]
async fn shutdown_resolves_every_future_and_refuses_new_records() {
    let env = TestEnv::new().await;
    let stream = env.create_stream(2).await;
    // A long linger: without shutdown's flush these would sit in the aggregator for 10 s.
    let config = ProducerConfig::default().record_max_buffered_time(Duration::from_secs(10));
    let producer = Producer::new(&env.sdk_config, config).expect("producer");
    let mut futures = Vec::new();
    for i in 0..2_000 {
        let record = UserRecord::new(
            stream.name.as_str(),
            format!("k{i}"),
            Bytes::from(vec![1u8; 100]),
        );
        futures.push(producer.put(record).await.expect("accepted"));
    }
    let started = Instant::now();
    producer.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown flushed instead of waiting out the linger"
    );
    for f in futures {
        // Already resolved: shutdown returns only after every record has its result.
        let result = tokio::time::timeout(Duration::ZERO, f)
            .await
            .expect("resolved before shutdown returned");
        assert!(result.is_ok(), "{result:?}");
    }
    let refused = producer
        .put(UserRecord::new(stream.name.as_str(), "late", "x"))
        .await;
    match refused {
        Err(e) => assert!(matches!(e.kind, SubmitErrorKind::ShutDown), "{e}"),
        Ok(_) => panic!("a shut-down producer accepted a record"),
    }
}
