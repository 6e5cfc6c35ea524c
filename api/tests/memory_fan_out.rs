//! Enhanced fan-out in the in-memory Kinesis behaves as kinesis-mock and Kinesis do where the
//! consumer depends on it (the same steps as integration-tests' fan_out_boundary, plus a split).
#![cfg(feature = "memory")]

use std::time::Duration;

use bytes::Bytes;
use kinesis_api::memory::MemoryKinesis;
use kinesis_api::{
    ConsumerStatus, IteratorStart, Kinesis, PutEntry, ShardFilter, StreamRef, Subscription,
};
use kinesis_format::HashKey;

async fn put(k: &MemoryKinesis, from: usize, to: usize) {
    for i in from..to {
        let entry = PutEntry {
            partition_key: "k".into(),
            explicit_hash_key: None,
            data: Bytes::from(format!("r{i}")),
        };
        k.put_records(&StreamRef::new("s"), vec![entry])
            .await
            .unwrap();
    }
}

/// Data of the next events until `n` records came; the last continuation.
async fn take(sub: &mut Box<dyn Subscription>, n: usize) -> (Vec<String>, Option<String>) {
    let (mut data, mut continuation) = (Vec::new(), None);
    while data.len() < n {
        let event = tokio::time::timeout(Duration::from_secs(10), sub.next_event())
            .await
            .expect("an event within 10 s")
            .expect("open")
            .expect("no error");
        data.extend(
            event
                .records
                .iter()
                .map(|r| String::from_utf8_lossy(&r.data).into_owned()),
        );
        continuation = event.continuation_sequence_number;
    }
    (data, continuation)
}

fn strings(from: usize, to: usize) -> Vec<String> {
    (from..to).map(|i| format!("r{i}")).collect()
}

#[tokio::test(start_paused = true)]
async fn subscriptions_push_in_order_resume_after_the_continuation_and_end_at_a_split() {
    let k = MemoryKinesis::with_seed(1);
    k.create_stream("s", 1);
    let arn = k
        .describe_stream_summary(&StreamRef::new("s"))
        .await
        .unwrap()
        .arn;
    put(&k, 0, 10).await;
    let consumer = k.register_stream_consumer(&arn, "c").await.unwrap();
    assert_eq!(consumer.status, ConsumerStatus::Active);
    let again = k.register_stream_consumer(&arn, "c").await.unwrap_err();
    assert!(again.is_code("ResourceInUseException"), "{again}");
    assert_eq!(
        k.describe_stream_consumer(&arn, "c").await.unwrap(),
        consumer
    );

    let shard = "shardId-000000000000";
    let mut first = k
        .subscribe_to_shard(&consumer.arn, shard, &IteratorStart::TrimHorizon)
        .await
        .unwrap();
    let (data, continuation) = take(&mut first, 10).await;
    assert_eq!(data, strings(0, 10));
    // Records put while it is open are pushed.
    put(&k, 10, 12).await;
    assert_eq!(take(&mut first, 2).await.0, strings(10, 12));
    let refused = k
        .subscribe_to_shard(&consumer.arn, shard, &IteratorStart::TrimHorizon)
        .await
        .unwrap_err();
    assert!(refused.is_code("ResourceInUseException"), "{refused}");
    drop(first);

    // Resumed after the first continuation: the records after it.
    let mut resumed = k
        .subscribe_to_shard(
            &consumer.arn,
            shard,
            &IteratorStart::AfterSequence(continuation.unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(take(&mut resumed, 2).await.0, strings(10, 12));

    // After a split the parent's last event has no continuation and names both children.
    let parent = k
        .list_shards(&StreamRef::new("s"), ShardFilter::Open)
        .await
        .unwrap()
        .remove(0);
    let middle = HashKey(parent.range.start.0 + (parent.range.end.0 - parent.range.start.0) / 2);
    k.split_shard("s", shard, middle).unwrap();
    let last = resumed.next_event().await.unwrap().unwrap();
    assert!(last.is_shard_end() && last.records.is_empty(), "{last:?}");
    assert_eq!(last.child_shards.len(), 2);
    assert!(
        resumed.next_event().await.is_none(),
        "the subscription ended"
    );
}

/// A one-shard stream "s" and its registered consumer "c".
async fn stream_and_consumer(seed: u64) -> (MemoryKinesis, kinesis_api::StreamConsumer) {
    let k = MemoryKinesis::with_seed(seed);
    k.create_stream("s", 1);
    let arn = k
        .describe_stream_summary(&StreamRef::new("s"))
        .await
        .unwrap()
        .arn;
    let consumer = k.register_stream_consumer(&arn, "c").await.unwrap();
    (k, consumer)
}

#[tokio::test(start_paused = true)]
async fn a_subscription_ends_after_five_minutes() {
    let (k, consumer) = stream_and_consumer(2).await;
    let mut sub = k
        .subscribe_to_shard(
            &consumer.arn,
            "shardId-000000000000",
            &IteratorStart::Latest,
        )
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    assert!(sub.next_event().await.is_none());
    let lasted = started.elapsed();
    assert!(
        lasted >= Duration::from_secs(300) && lasted < Duration::from_secs(301),
        "{lasted:?}"
    );
    // And its place is free again.
    k.subscribe_to_shard(
        &consumer.arn,
        "shardId-000000000000",
        &IteratorStart::Latest,
    )
    .await
    .unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_subscription_older_than_five_seconds_is_taken_over() {
    let (k, consumer) = stream_and_consumer(3).await;
    let shard = "shardId-000000000000";
    let mut old = k
        .subscribe_to_shard(&consumer.arn, shard, &IteratorStart::TrimHorizon)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let early = k
        .subscribe_to_shard(&consumer.arn, shard, &IteratorStart::TrimHorizon)
        .await
        .unwrap_err();
    assert!(early.is_code("ResourceInUseException"), "{early}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut new = k
        .subscribe_to_shard(&consumer.arn, shard, &IteratorStart::TrimHorizon)
        .await
        .expect("takes over after 5 s");
    let taken = old.next_event().await.unwrap().unwrap_err();
    assert!(taken.is_code("ResourceInUseException"), "{taken}");
    assert!(old.next_event().await.is_none());
    // The old one's end does not free the new one's place.
    drop(old);
    put(&k, 0, 1).await;
    assert_eq!(take(&mut new, 1).await.0, strings(0, 1));
}
