//! Reading a stream back completely, for checking what a producer wrote.

use std::time::Duration;

use aws_sdk_kinesis::types::{Shard, ShardIteratorType};
use bytes::Bytes;
use kinesis_format::{Deaggregated, HashKeyRange, deaggregate};

use crate::TestStream;
pub use crate::resources::shard_range;

/// One user record as read back: deaggregated when its Kinesis record was an aggregate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadRecord {
    /// The shard it was read from.
    pub shard_id: String,
    /// Its Kinesis record's sequence number.
    pub sequence_number: String,
    /// Its index in the aggregate (0 for a raw record).
    pub sub_sequence_number: u64,
    /// Whether it came out of an aggregate.
    pub aggregated: bool,
    /// The user record's partition key.
    pub partition_key: String,
    /// The user record's explicit hash key (only known for aggregated records).
    pub explicit_hash_key: Option<String>,
    /// The user record's data.
    pub data: Bytes,
}

impl ReadRecord {
    /// The user record's hash key.
    pub fn hash_key(&self) -> kinesis_format::HashKey {
        kinesis_format::HashKey::for_record(&self.partition_key, self.explicit_hash_key.as_deref())
            .expect("valid explicit hash key")
    }
}

/// Every user record of every shard (open and closed), with each shard's hash key range.
pub async fn all_records(stream: &TestStream) -> Vec<(Shard, HashKeyRange, Vec<ReadRecord>)> {
    let mut out = Vec::new();
    for shard in stream.shards().await {
        let records = shard_records(stream, shard.shard_id()).await;
        out.push((shard.clone(), shard_range(&shard), records));
    }
    out
}

/// Every user record of one shard from TRIM_HORIZON until the shard is closed or caught up.
pub async fn shard_records(stream: &TestStream, shard_id: &str) -> Vec<ReadRecord> {
    let kinesis = stream.kinesis();
    let mut iterator = kinesis
        .get_shard_iterator()
        .stream_name(&stream.name)
        .shard_id(shard_id)
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GetShardIterator {shard_id}: {e:?}"))
        .shard_iterator
        .expect("shard iterator");
    let mut out = Vec::new();
    for _ in 0..100_000 {
        let page = kinesis
            .get_records()
            .shard_iterator(&iterator)
            .limit(10_000)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GetRecords {shard_id}: {e:?}"));
        for record in page.records() {
            expand(shard_id, record, &mut out);
        }
        let caught_up = page.records().is_empty() && page.millis_behind_latest() == Some(0);
        match page.next_shard_iterator() {
            Some(next) if !caught_up => iterator = next.to_owned(),
            _ => return out,
        }
        if page.records().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    panic!("shard {shard_id} never caught up");
}

/// Appends the user records of one Kinesis record.
pub fn expand(shard_id: &str, record: &aws_sdk_kinesis::types::Record, out: &mut Vec<ReadRecord>) {
    let data = Bytes::copy_from_slice(record.data().as_ref());
    match deaggregate(&data) {
        Deaggregated::Aggregated(subs) => out.extend(subs.into_iter().map(|sub| ReadRecord {
            shard_id: shard_id.to_owned(),
            sequence_number: record.sequence_number().to_owned(),
            sub_sequence_number: sub.sub_sequence_number,
            aggregated: true,
            partition_key: sub.partition_key.to_string(),
            explicit_hash_key: sub.explicit_hash_key.as_deref().map(str::to_owned),
            data: sub.data,
        })),
        Deaggregated::Raw(_) => out.push(ReadRecord {
            shard_id: shard_id.to_owned(),
            sequence_number: record.sequence_number().to_owned(),
            sub_sequence_number: 0,
            aggregated: false,
            partition_key: record.partition_key().to_owned(),
            explicit_hash_key: None,
            data,
        }),
    }
}
