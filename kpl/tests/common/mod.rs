//! Shared by the producer's in-memory tests: a stream on the in-memory Kinesis, a producer that
//! has learned its shards, and the stream read back as a consumer would.

#![allow(dead_code)]

use std::sync::Arc;

use bytes::Bytes;
use kinesis_api::memory::{MemoryKinesis, ShardLimits};
use kinesis_api::{IteratorStart, Kinesis, ShardFilter, StreamRef};
use kinesis_format::{Deaggregated, HashKey, deaggregate};
use kpl::{Producer, ProducerConfig, UserRecord};

pub(crate) fn stream(shards: u32) -> Arc<MemoryKinesis> {
    stream_with_limits(shards, ShardLimits::default())
}

pub(crate) fn stream_with_limits(shards: u32, limits: ShardLimits) -> Arc<MemoryKinesis> {
    let kinesis = MemoryKinesis::with_seed(7);
    kinesis.set_limits(limits);
    kinesis.create_stream("s", shards);
    Arc::new(kinesis)
}

/// A producer that has learned the stream's shards (its first put), so faults injected after
/// this hit PutRecords. (A producer that cannot list the shards fails its puts at once.)
pub(crate) async fn warmed_up(kinesis: &Arc<MemoryKinesis>, config: ProducerConfig) -> Producer {
    let producer = Producer::with_kinesis(kinesis.clone(), config).unwrap();
    let first = UserRecord::new("s", "warm-up", Bytes::from_static(b"warm-up"));
    producer.put(first).await.unwrap().await.unwrap();
    producer
}

/// Every readable user record as (shard, partition key, data), each shard in stored order.
pub(crate) async fn stored_in_order(
    kinesis: &MemoryKinesis,
    whole_aggregates: bool,
) -> Vec<(String, String, String)> {
    let s = StreamRef::new("s");
    let mut out = Vec::new();
    for shard in kinesis.list_shards(&s, ShardFilter::All).await.unwrap() {
        let mut it = kinesis
            .get_shard_iterator(&s, &shard.id, &IteratorStart::TrimHorizon)
            .await
            .unwrap();
        loop {
            let page = kinesis.get_records(&it, 10_000).await.unwrap();
            for r in &page.records {
                let mut keep = |key: HashKey, pk: &str, data: &Bytes| {
                    if shard.range.contains(key) {
                        let data = String::from_utf8_lossy(data).into_owned();
                        out.push((shard.id.clone(), pk.to_owned(), data));
                    }
                };
                match deaggregate(&r.data) {
                    Deaggregated::Aggregated(subs) => {
                        let outside = subs
                            .iter()
                            .any(|sub| !shard.range.contains(sub.hash_key().unwrap()));
                        if whole_aggregates && outside {
                            continue;
                        }
                        for sub in subs {
                            keep(sub.hash_key().unwrap(), &sub.partition_key, &sub.data);
                        }
                    }
                    Deaggregated::Raw(_) => {
                        let key = HashKey::from_partition_key(&r.partition_key);
                        keep(key, &r.partition_key, &r.data);
                    }
                }
            }
            match page.next_iterator {
                Some(next) if !page.records.is_empty() => it = next,
                _ => break,
            }
        }
    }
    out
}
