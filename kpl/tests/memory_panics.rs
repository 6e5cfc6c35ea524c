//! A `Kinesis` implementation that panics inside PutRecords (a bug in an adapter given to
//! `Producer::with_kinesis`): each record of the call fails with the panic's message, its memory
//! is given back, `flush_and_wait` returns, and the producer (ordered mode included) goes on.

use std::sync::Arc;

use bytes::Bytes;
use kinesis_api::memory::MemoryKinesis;
use kpl::{Producer, ProducerConfig, PutErrorKind, UserRecord};

#[tokio::test(start_paused = true)]
async fn a_panicking_put_records_fails_its_records_and_the_producer_goes_on() {
    let kinesis = Arc::new(MemoryKinesis::with_seed(3));
    kinesis.create_stream("s", 2);
    kinesis.set_panic_on_put(true);
    let producer =
        Producer::with_kinesis(kinesis.clone(), ProducerConfig::default().ordered(true)).unwrap();
    let mut pending = Vec::new();
    for i in 0..20 {
        let r = UserRecord::new("s", format!("k{i}"), Bytes::from_static(b"x"));
        pending.push(producer.put(r).await.unwrap());
    }
    producer.flush_and_wait().await;
    for p in pending {
        let err = p.await.unwrap_err();
        assert!(
            matches!(&err.kind, PutErrorKind::Rejected { message, .. } if message.contains("injected panic")),
            "{err}"
        );
    }
    assert_eq!(producer.stats().outstanding_records, 0, "memory given back");
    kinesis.set_panic_on_put(false);
    let r = UserRecord::new("s", "k0", Bytes::from_static(b"y"));
    producer
        .put(r)
        .await
        .unwrap()
        .await
        .expect("the line moved on");
    producer.shutdown().await;
}
