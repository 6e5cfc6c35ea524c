//! The read-ahead on the in-memory Kinesis: its bound, and an iterator that expires while the
//! processor is slow.

use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use kinesis_api::memory::MemoryKinesis;
use kinesis_api::{PutEntry, PutResult, RecordsPage, Shard, ShardFilter, StreamSummary};

use super::*;

/// Counts GetRecords and GetShardIterator calls on the way to the in-memory Kinesis.
#[derive(Debug)]
struct Counting(MemoryKinesis, AtomicUsize, AtomicUsize);

#[async_trait]
impl Kinesis for Counting {
    async fn describe_stream_summary(&self, s: &StreamRef) -> Result<StreamSummary, AwsError> {
        self.0.describe_stream_summary(s).await
    }
    async fn list_shards(&self, s: &StreamRef, f: ShardFilter) -> Result<Vec<Shard>, AwsError> {
        self.0.list_shards(s, f).await
    }
    async fn get_shard_iterator(
        &self,
        s: &StreamRef,
        shard: &str,
        start: &IteratorStart,
    ) -> Result<String, AwsError> {
        self.2.fetch_add(1, Ordering::Relaxed);
        self.0.get_shard_iterator(s, shard, start).await
    }
    async fn get_records(&self, iterator: &str, limit: i32) -> Result<RecordsPage, AwsError> {
        self.1.fetch_add(1, Ordering::Relaxed);
        self.0.get_records(iterator, limit).await
    }
    async fn put_records(
        &self,
        s: &StreamRef,
        entries: Vec<PutEntry>,
    ) -> Result<Vec<PutResult>, AwsError> {
        self.0.put_records(s, entries).await
    }
}

/// A one-shard stream holding records "0".."n-1", and a fetcher on it from the start.
async fn fetcher(n: usize, limits: PrefetchLimits) -> (Arc<Counting>, Prefetcher) {
    let kinesis = Arc::new(Counting(
        MemoryKinesis::with_seed(3),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    ));
    kinesis.0.create_stream("s", 1);
    let s = StreamRef::new("s");
    for i in 0..n {
        let entry = PutEntry {
            partition_key: "k".into(),
            explicit_hash_key: None,
            data: Bytes::from(i.to_string()),
        };
        let put = kinesis.put_records(&s, vec![entry]).await.unwrap();
        assert!(
            matches!(put[0], PutResult::Stored { .. }),
            "stored: {put:?}"
        );
        if i % 1_000 == 999 && i + 1 < n {
            // The shard takes 1,000 records a second.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    let shard = "shardId-000000000000";
    let it = kinesis
        .get_shard_iterator(&s, shard, &IteratorStart::TrimHorizon)
        .await
        .unwrap();
    let jitter = Arc::new(Jitter::new(Some(1)));
    let f = Prefetcher::start(kinesis.clone(), s, shard.into(), it, limits, jitter);
    (kinesis, f)
}

fn limits(max_records: usize) -> PrefetchLimits {
    PrefetchLimits {
        max_records,
        max_bytes: 1 << 20,
        records_per_call: 10,
        idle_time: Duration::from_millis(200),
    }
}

fn data(batch: &Prefetched) -> Vec<usize> {
    batch
        .records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.data).parse().unwrap())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn read_ahead_stops_at_its_bound_and_resumes_as_batches_are_done_with() {
    let (kinesis, mut f) = fetcher(1_000, limits(50)).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let calls = kinesis.1.load(Ordering::Relaxed);
    assert!(
        calls <= 50 / 10 + 1,
        "a minute with nobody taking: at most the bound's worth of calls, got {calls}"
    );
    // Taking (and dropping) batches frees room: reading goes on, in order, to the end.
    let mut next = 0;
    while next < 1_000 {
        let batch = f.next().await.unwrap().unwrap();
        for d in data(&batch) {
            assert_eq!(d, next, "in order, nothing skipped or repeated");
            next += 1;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn an_iterator_that_expires_while_the_processor_is_slow_is_refreshed_after_the_last_record() {
    let (kinesis, mut f) = fetcher(200, limits(20)).await;
    let first = f.next().await.unwrap().unwrap();
    assert_eq!(data(&first)[0], 0);
    let mut next = data(&first).len();
    // The processor holds the batch past the iterator's 5-minute life: the fetcher waits for
    // room with an iterator that expires meanwhile.
    tokio::time::sleep(Duration::from_secs(6 * 60)).await;
    drop(first);
    while next < 200 {
        let batch = f.next().await.unwrap().unwrap();
        for d in data(&batch) {
            assert_eq!(d, next, "continues after the last record fetched");
            next += 1;
        }
    }
    assert_eq!(
        kinesis.2.load(Ordering::Relaxed),
        2,
        "the first iterator, and one refreshed after it expired"
    );
}

#[tokio::test(start_paused = true)]
async fn a_backlog_starts_with_a_small_page_and_the_pages_grow_to_the_limit() {
    let big = PrefetchLimits {
        max_records: 100_000,
        max_bytes: 64 << 20,
        records_per_call: 10_000,
        idle_time: Duration::from_millis(200),
    };
    let (kinesis, mut f) = fetcher(5_000, big).await;
    let first = f.next().await.unwrap().unwrap();
    assert_eq!(
        data(&first),
        (0..FIRST_LIMIT as usize).collect::<Vec<_>>(),
        "the processor gets the backlog's first records without waiting for a full page"
    );
    let mut next = first.records.len();
    let mut largest = 0;
    while next < 5_000 {
        let batch = f.next().await.unwrap().unwrap();
        largest = largest.max(batch.records.len());
        for d in data(&batch) {
            assert_eq!(d, next, "in order, nothing skipped or repeated");
            next += 1;
        }
    }
    assert!(largest > 1_000, "pages grow past 1,000: {largest}");
    let calls = kinesis.1.load(Ordering::Relaxed);
    assert!(calls <= 5, "10, 100, 1,000, then the rest: {calls} calls");
}
