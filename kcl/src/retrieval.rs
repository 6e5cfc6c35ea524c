//! Polling retrieval: shard iterators, GetRecords, and turning Kinesis records into the user
//! records a processor sees.
//!
//! Deaggregation filters sub-records one by one: a sub-record whose hash key lies outside the
//! leased shard's range (stored there by a producer working from a stale shard map) is dropped,
//! while its siblings are delivered. (The Java KCL drops the whole aggregate; issue 343.)
//! Anything that is not a valid aggregate is delivered raw.

use std::time::Duration;

use bytes::Bytes;
use kinesis_api::{ChildShard, IteratorStart, Kinesis, Record, StreamRef};
use kinesis_format::{
    Deaggregated, ExtendedSequenceNumber, HashKeyRange, SequenceNumber, SubRecord, deaggregate_all,
};
use kinesis_retry::{AwsError, BackoffConfig, RetryPolicy, retry_with_rng};

use crate::jitter::Jitter;

use crate::processor::ConsumerRecord;

/// Attempts for Kinesis control calls (GetShardIterator, ListShards, DescribeStreamSummary):
/// throttled and transient failures are retried with jittered back-off; the SDK's own retries
/// are off, so they do not multiply.
pub(crate) fn control_policy() -> RetryPolicy {
    RetryPolicy::new(
        4,
        BackoffConfig::new(Duration::from_millis(100), Duration::from_secs(2)).expect("valid"),
    )
}

/// An iterator into `shard_id` from `start`, retried by class.
pub(crate) async fn shard_iterator(
    kinesis: &dyn Kinesis,
    stream: &StreamRef,
    shard_id: &str,
    start: &IteratorStart,
    jitter: &Jitter,
) -> Result<String, AwsError> {
    let mut rng = jitter.rng();
    retry_with_rng(control_policy(), &mut rng, AwsError::class, || {
        kinesis.get_shard_iterator(stream, shard_id, start)
    })
    .await
}

/// One GetRecords answer.
#[derive(Debug)]
pub(crate) enum Fetched {
    Batch {
        records: Vec<Record>,
        /// `None` at the shard's end.
        next: Option<String>,
        millis_behind_latest: Option<i64>,
        children: Vec<ChildShard>,
    },
    /// The iterator is older than 5 minutes: get a new one.
    Expired,
    /// Failed: throttled, transient or fatal as its class says.
    Failed(AwsError),
}

/// One GetRecords call (its timeout is the client's).
pub(crate) async fn get_records(kinesis: &dyn Kinesis, iterator: &str, limit: i32) -> Fetched {
    match kinesis.get_records(iterator, limit).await {
        Ok(page) => Fetched::Batch {
            records: page.records,
            next: page.next_iterator,
            millis_behind_latest: page.millis_behind_latest,
            children: page.child_shards,
        },
        Err(e) if e.is_code("ExpiredIteratorException") => Fetched::Expired,
        Err(e) => Fetched::Failed(e),
    }
}

/// What `to_user_records` left out.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Skipped {
    /// Sub-records outside the shard's hash key range.
    pub(crate) out_of_range: usize,
    /// User records at or before the resume position.
    pub(crate) before_resume: usize,
}

/// A Kinesis record's fields, taken apart for deaggregation.
struct Received {
    sequence: SequenceNumber,
    arrival: Option<std::time::SystemTime>,
    partition_key: String,
}

/// The user records of a page of Kinesis records, in order: deaggregated (the page's digests
/// checked side by side), filtered to `range`, and only those after `resume_after`. Takes the
/// records so that their data become the user records' buffers uncopied.
pub(crate) fn to_user_records(
    records: Vec<Record>,
    range: Option<HashKeyRange>,
    resume_after: Option<&ExtendedSequenceNumber>,
    out: &mut Vec<ConsumerRecord>,
    skipped: &mut Skipped,
) {
    let mut received = Vec::with_capacity(records.len());
    let mut blobs = Vec::with_capacity(records.len());
    for record in records {
        let Ok(sequence) = SequenceNumber::parse(&record.sequence_number) else {
            tracing::warn!(
                sequence = record.sequence_number,
                "record with an invalid sequence number skipped"
            );
            continue;
        };
        received.push(Received {
            sequence,
            arrival: record.approximate_arrival,
            partition_key: record.partition_key,
        });
        blobs.push(record.data);
    }
    let deaggregated = deaggregate_all(&blobs);
    for ((record, blob), deaggregated) in received.into_iter().zip(blobs).zip(deaggregated) {
        user_records_of(
            record,
            blob,
            deaggregated,
            range,
            resume_after,
            out,
            skipped,
        );
    }
}

/// The user records of one deaggregated Kinesis record (see [`to_user_records`]).
fn user_records_of(
    record: Received,
    blob: Bytes,
    deaggregated: Deaggregated,
    range: Option<HashKeyRange>,
    resume_after: Option<&ExtendedSequenceNumber>,
    out: &mut Vec<ConsumerRecord>,
    skipped: &mut Skipped,
) {
    let Received {
        sequence,
        arrival,
        partition_key,
    } = record;
    let keep = |sub: u64, skipped: &mut Skipped| {
        let after =
            resume_after.is_none_or(|r| ExtendedSequenceNumber::new(sequence.clone(), sub) > *r);
        if !after {
            skipped.before_resume += 1;
        }
        after
    };
    match deaggregated {
        Deaggregated::Aggregated(subs) => {
            // Only filtering needs them; computed for the whole aggregate at once.
            let keys = range
                .map(|_| SubRecord::hash_keys(&subs))
                .unwrap_or_default();
            for (i, sub) in subs.into_iter().enumerate() {
                let in_range = match (range, keys.get(i)) {
                    (Some(range), Some(Ok(key))) => range.contains(*key),
                    (Some(_), _) => false,
                    (None, _) => true,
                };
                if !in_range {
                    skipped.out_of_range += 1;
                    continue;
                }
                if keep(sub.sub_sequence_number, skipped) {
                    out.push(ConsumerRecord {
                        partition_key: sub.partition_key,
                        explicit_hash_key: sub.explicit_hash_key,
                        data: sub.data,
                        sequence_number: sequence.clone(),
                        sub_sequence_number: sub.sub_sequence_number,
                        approximate_arrival: arrival,
                        aggregated: true,
                    });
                }
            }
        }
        Deaggregated::Raw(_) => {
            if keep(0, skipped) {
                out.push(ConsumerRecord {
                    partition_key: partition_key.into(),
                    explicit_hash_key: None,
                    data: blob,
                    sequence_number: sequence,
                    sub_sequence_number: 0,
                    approximate_arrival: arrival,
                    aggregated: false,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kinesis_format::{AggregateBuilder, HashKey};

    fn record(seq: &str, pk: &str, data: Vec<u8>) -> Record {
        Record::new(seq, pk, data)
    }

    #[test]
    fn out_of_range_sub_records_are_dropped_one_by_one() {
        let mut b = AggregateBuilder::new();
        b.add("x", Some("10"), Bytes::from_static(b"in-1"));
        b.add("y", Some("500"), Bytes::from_static(b"out"));
        b.add("z", Some("20"), Bytes::from_static(b"in-2"));
        let r = record("100", "a", b.finish().to_vec());
        let range = HashKeyRange::new(HashKey(0), HashKey(99));
        let (mut out, mut skipped) = (Vec::new(), Skipped::default());
        to_user_records(vec![r], range, None, &mut out, &mut skipped);
        let data: Vec<&[u8]> = out.iter().map(|c| &c.data[..]).collect();
        assert_eq!(data, [&b"in-1"[..], &b"in-2"[..]]);
        assert_eq!(
            out[1].sub_sequence_number, 2,
            "sub-sequence numbers keep their positions"
        );
        assert_eq!(skipped.out_of_range, 1);
    }

    #[test]
    fn resuming_skips_up_to_and_including_the_checkpoint() {
        let mut b = AggregateBuilder::new();
        for i in 0..5 {
            b.add("k", None, Bytes::from(vec![i]));
        }
        let r = record("100", "a", b.finish().to_vec());
        let resume = ExtendedSequenceNumber::new(SequenceNumber::parse("100").unwrap(), 2);
        let (mut out, mut skipped) = (Vec::new(), Skipped::default());
        to_user_records(vec![r], None, Some(&resume), &mut out, &mut skipped);
        let subs: Vec<u64> = out.iter().map(|c| c.sub_sequence_number).collect();
        assert_eq!(subs, [3, 4]);
        assert_eq!(skipped.before_resume, 3);

        // A raw record at the checkpoint itself is not delivered again; the next one is.
        let (mut out, mut skipped) = (Vec::new(), Skipped::default());
        let at = ExtendedSequenceNumber::new(SequenceNumber::parse("100").unwrap(), 0);
        to_user_records(
            vec![
                record("100", "a", b"raw".to_vec()),
                record("101", "a", b"raw".to_vec()),
            ],
            None,
            Some(&at),
            &mut out,
            &mut skipped,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].sequence_number.as_str(), "101");
    }

    #[test]
    fn a_corrupted_aggregate_is_delivered_raw_in_its_place_in_the_page() {
        let mut b = AggregateBuilder::new();
        b.add("k", None, Bytes::from_static(b"one"));
        b.add("k", None, Bytes::from_static(b"two"));
        let good = b.finish().to_vec();
        let mut bad = good.clone();
        *bad.last_mut().unwrap() ^= 1;
        let (mut out, mut skipped) = (Vec::new(), Skipped::default());
        to_user_records(
            vec![
                record("7", "outer", bad.clone()),
                record("8", "outer", good.clone()),
                record("not-a-number", "outer", good.clone()),
                record("9", "outer", good),
            ],
            None,
            None,
            &mut out,
            &mut skipped,
        );
        let got: Vec<(&str, u64, bool)> = out
            .iter()
            .map(|c| {
                (
                    c.sequence_number.as_str(),
                    c.sub_sequence_number,
                    c.aggregated,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("7", 0, false),
                ("8", 0, true),
                ("8", 1, true),
                ("9", 0, true),
                ("9", 1, true)
            ],
            "the invalid sequence number is skipped, the rest keep their order"
        );
        assert_eq!(&*out[0].partition_key, "outer");
        assert_eq!(&out[0].data[..], &bad[..]);
        assert_eq!(&out[2].data[..], b"two");
    }
}
