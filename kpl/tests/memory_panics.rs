//! A `Kinesis` implementation that panics inside PutRecords (a bug in an adapter given to
//! `Producer::with_kinesis`): each record of the call fails with the panic's message, its memory
//! is given back, `flush_and_wait` returns, and the producer (ordered mode included) goes on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use kinesis_api::memory::MemoryKinesis;
use kinesis_api::{
    AwsError, IteratorStart, Kinesis, PutEntry, PutResult, RecordsPage, Shard, ShardFilter,
    StreamRef, StreamSummary,
};
use kpl::{Producer, ProducerConfig, PutErrorKind, UserRecord};

#[derive(Debug)]
struct Panicking {
    inner: MemoryKinesis,
    panic: AtomicBool,
}

#[async_trait]
impl Kinesis for Panicking {
    async fn describe_stream_summary(&self, s: &StreamRef) -> Result<StreamSummary, AwsError> {
        self.inner.describe_stream_summary(s).await
    }
    async fn list_shards(&self, s: &StreamRef, f: ShardFilter) -> Result<Vec<Shard>, AwsError> {
        self.inner.list_shards(s, f).await
    }
    async fn get_shard_iterator(
        &self,
        s: &StreamRef,
        shard: &str,
        start: &IteratorStart,
    ) -> Result<String, AwsError> {
        self.inner.get_shard_iterator(s, shard, start).await
    }
    async fn get_records(&self, it: &str, limit: i32) -> Result<RecordsPage, AwsError> {
        self.inner.get_records(it, limit).await
    }
    async fn put_records(
        &self,
        s: &StreamRef,
        entries: Vec<PutEntry>,
    ) -> Result<Vec<PutResult>, AwsError> {
        if self.panic.load(Ordering::SeqCst) {
            panic!("adapter bug");
        }
        self.inner.put_records(s, entries).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_put_records_fails_its_records_and_the_producer_goes_on() {
    let inner = MemoryKinesis::with_seed(3);
    inner.create_stream("s", 2);
    let kinesis = Arc::new(Panicking {
        inner,
        panic: AtomicBool::new(true),
    });
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
            matches!(&err.kind, PutErrorKind::Rejected { message, .. } if message.contains("adapter bug")),
            "{err}"
        );
    }
    assert_eq!(producer.stats().outstanding_records, 0, "memory given back");
    kinesis.panic.store(false, Ordering::SeqCst);
    let r = UserRecord::new("s", "k0", Bytes::from_static(b"y"));
    producer
        .put(r)
        .await
        .unwrap()
        .await
        .expect("the line moved on");
    producer.shutdown().await;
}
