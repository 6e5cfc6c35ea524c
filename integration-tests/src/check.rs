//! Checks shared by the producer tests: what was read back equals what was put.

use std::collections::HashMap;

use bytes::Bytes;
use kpl::PutOutcome;

use crate::TestStream;
use crate::read::all_records;

/// A user record that was put, with the producer's result for it.
#[derive(Clone, Debug)]
pub struct Put {
    /// Partition key.
    pub partition_key: String,
    /// Data.
    pub data: Bytes,
    /// The producer's success result.
    pub outcome: PutOutcome,
}

/// Reads the whole stream back and checks: the multiset of (partition key, data) equals what was
/// put; every user record lies in its shard's hash key range; every result's shard, sequence and
/// sub-sequence number point at exactly that record. Returns how many user records were read.
pub async fn verify_stream(stream: &TestStream, puts: &[Put]) -> usize {
    let mut by_position: HashMap<(String, u64), (String, String, Bytes)> = HashMap::new();
    let mut read_count = 0;
    for (shard, range, records) in all_records(stream).await {
        for r in records {
            assert!(
                range.contains(r.hash_key()),
                "user record {:?} (hash key {}) stored on {} which owns {range:?}",
                r.partition_key,
                r.hash_key(),
                shard.shard_id()
            );
            read_count += 1;
            let previous = by_position.insert(
                (r.sequence_number.clone(), r.sub_sequence_number),
                (r.shard_id.clone(), r.partition_key.clone(), r.data.clone()),
            );
            assert!(previous.is_none(), "two user records at one position");
        }
    }
    let mut expected: Vec<(&str, &Bytes)> = puts
        .iter()
        .map(|p| (p.partition_key.as_str(), &p.data))
        .collect();
    let mut got: Vec<(&str, &Bytes)> = by_position
        .values()
        .map(|(_, k, d)| (k.as_str(), d))
        .collect();
    expected.sort();
    got.sort();
    assert_eq!(
        got.len(),
        expected.len(),
        "read back {} user records, put {}",
        got.len(),
        expected.len()
    );
    assert!(
        got == expected,
        "read-back multiset differs from what was put"
    );
    for p in puts {
        let o = &p.outcome;
        let at = by_position
            .get(&(o.sequence_number.clone(), o.sub_sequence_number))
            .unwrap_or_else(|| {
                panic!(
                    "no record read at {}/{}",
                    o.sequence_number, o.sub_sequence_number
                )
            });
        assert_eq!(at.0, o.shard_id, "result names the wrong shard");
        assert_eq!(
            (at.1.as_str(), &at.2),
            (p.partition_key.as_str(), &p.data),
            "result points at another record"
        );
    }
    read_count
}
