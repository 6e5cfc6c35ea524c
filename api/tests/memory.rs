//! The in-memory Kinesis behaves as Kinesis does where the producer and consumer depend on it.
#![cfg(feature = "memory")]

use std::time::Duration;

use bytes::Bytes;
use kinesis_api::memory::{Faults, MemoryKinesis};
use kinesis_api::{IteratorStart, Kinesis, PutEntry, PutResult, ShardFilter, StreamRef};
use kinesis_format::HashKey;
use kinesis_retry::{AwsErrorKind, Class};

fn entries(from: usize, n: usize) -> Vec<PutEntry> {
    (from..from + n)
        .map(|i| PutEntry {
            partition_key: format!("key-{i}"),
            explicit_hash_key: None,
            data: Bytes::from(i.to_string()),
        })
        .collect()
}

/// Every record of a shard from TRIM_HORIZON, and what its last page said.
async fn read_all(
    k: &MemoryKinesis,
    stream: &StreamRef,
    shard: &str,
) -> (Vec<String>, Vec<String>) {
    let mut it = k
        .get_shard_iterator(stream, shard, &IteratorStart::TrimHorizon)
        .await
        .unwrap();
    let mut data = Vec::new();
    loop {
        let page = k.get_records(&it, 10_000).await.unwrap();
        data.extend(
            page.records
                .iter()
                .map(|r| String::from_utf8_lossy(&r.data).into_owned()),
        );
        match page.next_iterator {
            Some(next) if !page.records.is_empty() => it = next,
            Some(_) => return (data, Vec::new()),
            None => {
                return (
                    data,
                    page.child_shards.iter().map(|c| c.id.clone()).collect(),
                );
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_split_closes_the_parent_and_its_end_names_the_children() {
    let k = MemoryKinesis::default();
    k.create_stream("s", 2);
    let s = StreamRef::new("s");
    let stored = k.put_records(&s, entries(0, 100)).await.unwrap();
    assert!(stored.iter().all(|r| matches!(r, PutResult::Stored { .. })));
    let shards = k.list_shards(&s, ShardFilter::All).await.unwrap();
    assert_eq!(shards.len(), 2);
    let parent = shards[0].clone();
    let middle = HashKey(parent.range.start.0 + (parent.range.end.0 - parent.range.start.0) / 2);
    k.split_shard("s", &parent.id, middle).unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    k.put_records(&s, entries(100, 100)).await.unwrap();

    let open = k.list_shards(&s, ShardFilter::Open).await.unwrap();
    assert_eq!(open.len(), 3, "the parent closed, two children opened");
    let children: Vec<_> = open
        .iter()
        .filter(|x| x.parents == [parent.id.clone()])
        .collect();
    assert_eq!(children.len(), 2);
    let (parent_data, announced) = read_all(&k, &s, &parent.id).await;
    let mut ids: Vec<String> = children.iter().map(|c| c.id.clone()).collect();
    ids.sort();
    assert_eq!(announced, ids, "the parent's end announces its children");
    // The parent holds only records put before the split; all 200 are somewhere.
    let mut all = parent_data.clone();
    for shard in &open {
        all.extend(read_all(&k, &s, &shard.id).await.0);
    }
    assert!(
        parent_data
            .iter()
            .all(|d| d.parse::<usize>().unwrap() < 100)
    );
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 200);
}

#[tokio::test(start_paused = true)]
async fn iterators_expire_after_five_minutes() {
    let k = MemoryKinesis::default();
    k.create_stream("s", 1);
    let s = StreamRef::new("s");
    let it = k
        .get_shard_iterator(&s, "shardId-000000000000", &IteratorStart::Latest)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(299)).await;
    assert!(k.get_records(&it, 10).await.is_ok());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let err = k.get_records(&it, 10).await.unwrap_err();
    assert!(err.is_code("ExpiredIteratorException"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn writes_and_reads_over_a_shards_limits_are_throttled() {
    let k = MemoryKinesis::default();
    k.create_stream("s", 1);
    let s = StreamRef::new("s");
    let results = k.put_records(&s, entries(0, 1_500)).await.unwrap();
    let throttled = results
        .iter()
        .filter(|r| matches!(r, PutResult::Failed { code, .. } if code == "ProvisionedThroughputExceededException"))
        .count();
    assert_eq!(throttled, 500, "1,000 records per second per shard");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let results = k.put_records(&s, entries(0, 600)).await.unwrap();
    let stored = results
        .iter()
        .filter(|r| matches!(r, PutResult::Stored { .. }))
        .count();
    assert_eq!(stored, 500, "half a second refills half the bucket");

    let it = k
        .get_shard_iterator(&s, "shardId-000000000000", &IteratorStart::TrimHorizon)
        .await
        .unwrap();
    for _ in 0..5 {
        k.get_records(&it, 1).await.unwrap();
    }
    let err = k.get_records(&it, 1).await.unwrap_err();
    assert_eq!(
        (err.code(), err.class()),
        (
            Some("ProvisionedThroughputExceededException"),
            Class::Throttled
        ),
        "5 reads per second per shard"
    );
}

#[tokio::test(start_paused = true)]
async fn seeded_faults_repeat_and_an_outage_fails_every_call() {
    let outcomes = |seed| async move {
        let k = MemoryKinesis::with_seed(seed);
        k.create_stream("s", 1);
        k.set_faults(Faults {
            internal_error: 0.2,
            throttle: 0.2,
            timeout: 0.1,
            timeout_after: Duration::from_secs(1),
        });
        let s = StreamRef::new("s");
        let mut seen = Vec::new();
        for _ in 0..50 {
            seen.push(match k.list_shards(&s, ShardFilter::All).await {
                Ok(_) => "ok".to_owned(),
                Err(e) => e.code().unwrap_or("timeout").to_owned(),
            });
        }
        seen
    };
    let a = outcomes(7).await;
    assert_eq!(a, outcomes(7).await, "the same seed gives the same faults");
    assert_ne!(a, outcomes(8).await);
    for code in [
        "ok",
        "InternalFailure",
        "ProvisionedThroughputExceededException",
        "timeout",
    ] {
        assert!(a.iter().any(|o| o == code), "{code} happens: {a:?}");
    }

    let k = MemoryKinesis::default();
    k.create_stream("s", 1);
    k.set_outage(true);
    let err = k
        .list_shards(&StreamRef::new("s"), ShardFilter::All)
        .await
        .unwrap_err();
    assert!(matches!(err.kind(), AwsErrorKind::Connection { .. }));
    assert_eq!(err.class(), Class::Transient);
    k.set_outage(false);
    k.delete_stream("s");
    let err = k
        .list_shards(&StreamRef::new("s"), ShardFilter::All)
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
}
