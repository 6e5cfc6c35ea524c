//! The producer against what a stream says about itself, on the in-memory Kinesis under tokio's
//! paused clock: its maximum record size (read where reported, 1 MiB where not), a stream deleted
//! under the producer (its later records refused at once, until it exists again), and a first
//! listing that fails for a while (retried, not refused) or never answers (a message that says
//! what to check).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kinesis_api::memory::{Faults, MemoryKinesis};
use kpl::{Producer, ProducerConfig, PutErrorKind, SubmitErrorKind, UserRecord};

const MIB: usize = 1024 * 1024;

fn kinesis() -> Arc<MemoryKinesis> {
    let kinesis = MemoryKinesis::with_seed(11);
    kinesis.create_stream("s", 2);
    Arc::new(kinesis)
}

fn record(bytes: usize) -> UserRecord {
    UserRecord::new("s", "k", Bytes::from(vec![b'x'; bytes]))
}

async fn stored(producer: &Producer, r: UserRecord) -> Result<(), String> {
    match producer.put(r).await {
        Ok(f) => f.await.map(|_| ()).map_err(|e| format!("{e}")),
        Err(e) => Err(format!("{e}")),
    }
}

fn too_large(e: &kpl::SubmitError) -> Option<usize> {
    match e.kind {
        SubmitErrorKind::TooLarge { max, .. } => Some(max),
        _ => None,
    }
}

#[tokio::test(start_paused = true)]
async fn records_are_sized_by_the_streams_own_limit_where_it_is_reported() {
    let kinesis = kinesis();
    let producer = Producer::with_kinesis(kinesis.clone(), ProducerConfig::default()).unwrap();
    // Not reported: 1 MiB, refused at put (Kinesis would refuse the whole call).
    stored(&producer, record(100)).await.unwrap();
    let err = producer.put(record(MIB + MIB / 2)).await.unwrap_err();
    assert_eq!(too_large(&err), Some(MIB), "{err}");

    // Raised to 2 MiB: read again on the next large record (at most once a minute).
    kinesis.set_max_record_size_kib("s", Some(2048));
    tokio::time::sleep(Duration::from_secs(61)).await;
    stored(&producer, record(MIB + MIB / 2))
        .await
        .expect("1.5 MiB fits a 2 MiB stream");
    let err = producer.put(record(2 * MIB + 1)).await.unwrap_err();
    assert_eq!(too_large(&err), Some(2 * MIB), "{err}");
    assert!(err.to_string().contains("UpdateMaxRecordSize"), "{err}");
    producer.shutdown().await;

    // A user's cap below the stream's limit wins.
    let capped = ProducerConfig::default().max_user_record_size(MIB);
    let producer = Producer::with_kinesis(kinesis.clone(), capped).unwrap();
    let err = producer.put(record(MIB + 1)).await.unwrap_err();
    assert_eq!(too_large(&err), Some(MIB), "{err}");
    producer.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_stream_deleted_under_the_producer_refuses_later_records_at_once_until_it_is_back() {
    let kinesis = kinesis();
    let producer = Producer::with_kinesis(kinesis.clone(), ProducerConfig::default()).unwrap();
    stored(&producer, record(10)).await.unwrap();
    kinesis.delete_stream("s");
    // The record in flight when the deletion is found fails for good.
    let err = producer.put(record(10)).await.unwrap().await.unwrap_err();
    assert!(matches!(err.kind, PutErrorKind::Rejected { .. }), "{err}");
    // Later ones are refused at put, without a call.
    let err = producer.put(record(10)).await.unwrap_err();
    assert!(
        matches!(err.kind, SubmitErrorKind::StreamNotFound { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("check the name"), "{err}");
    // Re-created: accepted again once the producer looks (every 10 s).
    kinesis.create_stream("s", 2);
    tokio::time::sleep(Duration::from_secs(11)).await;
    stored(&producer, record(10))
        .await
        .expect("the stream exists again");
    producer.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_first_listing_that_fails_for_a_while_is_retried_and_one_that_never_answers_says_what_to_check()
 {
    let kinesis = kinesis();
    kinesis.set_faults(Faults {
        internal_error: 1.0,
        ..Faults::default()
    });
    let producer = Producer::with_kinesis(kinesis.clone(), ProducerConfig::default()).unwrap();
    let p = producer.clone();
    let put = tokio::spawn(async move { stored(&p, record(10)).await });
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!put.is_finished(), "still retrying the listing");
    kinesis.set_faults(Faults::default());
    put.await
        .unwrap()
        .expect("stored once the endpoint answers");
    producer.shutdown().await;

    let unknown = UserRecord::new("nope", "k", Bytes::from_static(b"x"));
    let producer = Producer::with_kinesis(kinesis.clone(), ProducerConfig::default()).unwrap();
    let err = producer.put(unknown).await.unwrap_err();
    assert!(
        matches!(err.kind, SubmitErrorKind::StreamNotFound { .. }),
        "an unknown stream is refused at once: {err}"
    );

    kinesis.set_outage(true);
    let config = ProducerConfig::default().record_ttl(Duration::from_secs(5));
    let producer = Producer::with_kinesis(kinesis.clone(), config).unwrap();
    let started = tokio::time::Instant::now();
    let err = producer.put(record(10)).await.unwrap_err();
    let waited = started.elapsed();
    assert!(
        matches!(err.kind, SubmitErrorKind::ShardMap { .. }),
        "{err}"
    );
    assert!(
        waited <= Duration::from_secs(5),
        "gave up within record_ttl: {waited:?}"
    );
    assert!(
        err.to_string().contains("check that the endpoint answers"),
        "{err}"
    );
}
