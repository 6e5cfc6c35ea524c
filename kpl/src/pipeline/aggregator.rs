//! One open aggregate per predicted shard. An aggregate closes when the next record would not fit
//! (`aggregation_max_size`), when it holds `aggregation_max_count` records, or when its earliest
//! record has waited `record_max_buffered_time`. An aggregate of one record is sent raw, and so is
//! a record too large to share an aggregate, or one with no predicted shard.
//!
//! In ordered mode a record never overtakes an earlier one of its shard: a record too large to
//! share an aggregate first closes the shard's open one, and a record sent raw (aggregation off)
//! keeps its predicted shard, so that it waits in the shard's line.

use std::collections::BTreeMap;

use foldhash::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kinesis_format::{AggregateBuilder, HashKey};
use tokio::time::Instant;

use super::pending::{KinesisRecord, Payload, Pending, StreamId};
use super::shard_map::Shard;

/// The partition key of every aggregated Kinesis record: routing is by explicit hash key.
const AGGREGATE_PARTITION_KEY: &str = "a";

#[derive(Debug)]
struct Open {
    builder: AggregateBuilder,
    records: Vec<Pending>,
    stream: StreamId,
    shard: Arc<str>,
    first_hash_key: HashKey,
    send_by: Instant,
    id: u64,
}

#[derive(Debug)]
pub(crate) struct Aggregator {
    enabled: bool,
    ordered: bool,
    max_size: usize,
    max_count: usize,
    linger: Duration,
    /// Open aggregates by shard slot (see [`Shard::slot`]): one integer look-up per record, and
    /// no reference count touched (the stream name's may be changing on the caller's thread).
    open: HashMap<u64, Open>,
    /// Open aggregates by deadline (to their slots), so the earliest is found without a scan.
    by_deadline: BTreeMap<(Instant, u64), u64>,
    next_id: u64,
    /// Bytes and records of the last aggregate closed: a new one reserves about that much, so
    /// it rarely grows (and copies) on the way.
    typical: (usize, usize),
    /// Emptied builders, kept for new aggregates: their buffers are already the right size.
    spare: Vec<AggregateBuilder>,
    /// Emptied record lists of resolved aggregates, likewise.
    spare_records: Vec<Vec<Pending>>,
}

/// At most this many emptied builders (and record lists) are kept.
const SPARE_BUILDERS: usize = 512;

impl Aggregator {
    pub(crate) fn new(enabled: bool, max_size: usize, max_count: usize, linger: Duration) -> Self {
        Aggregator {
            enabled,
            ordered: false,
            max_size,
            max_count,
            linger,
            open: HashMap::default(),
            by_deadline: BTreeMap::new(),
            next_id: 0,
            typical: (0, 0),
            spare: Vec::new(),
            spare_records: Vec::new(),
        }
    }

    /// Ordered mode (see the module's docs).
    pub(crate) fn ordered(mut self, ordered: bool) -> Self {
        self.ordered = ordered;
        self
    }

    /// Adds a user record bound for `shard`; records that must go now are pushed to `out`.
    pub(crate) fn add(&mut self, p: Pending, shard: Option<&Shard>, out: &mut Vec<KinesisRecord>) {
        let send_by = p.arrival + self.linger;
        let Some(shard) = shard.filter(|_| self.enabled) else {
            let line = shard.filter(|_| self.ordered).map(|s| s.id.clone());
            out.push(single(p, line, send_by));
            return;
        };
        let (pk, ehk, len) = (
            &p.record.partition_key,
            p.record.explicit_hash_key.as_deref(),
            p.record.data.len(),
        );
        if AggregateBuilder::framed_len_of_one(pk, ehk, len) > self.max_size {
            // Too large for any aggregate: alone and raw; the open aggregate keeps waiting, unless
            // it must not be overtaken.
            if self.ordered {
                self.close(shard.slot, out);
            }
            out.push(single(p, Some(shard.id.clone()), send_by));
            return;
        }

        if let Some(open) = self.open.get_mut(&shard.slot) {
            let added = open.records.len() < self.max_count
                && open
                    .builder
                    .try_add(pk, ehk, &p.record.data[..], self.max_size)
                    .is_ok();
            if added {
                if send_by < open.send_by {
                    // A retried record is older than the aggregate's first: it sets the deadline.
                    self.by_deadline.remove(&(open.send_by, open.id));
                    self.by_deadline.insert((send_by, open.id), shard.slot);
                    open.send_by = send_by;
                }
                open.records.push(p);
                if open.records.len() >= self.max_count {
                    self.close(shard.slot, out);
                }
                return;
            }
            // Full: send it, and start a new one with this record.
            self.close(shard.slot, out);
        }

        let id = self.next_id;
        self.next_id += 1;
        self.by_deadline.insert((send_by, id), shard.slot);
        let (bytes, count) = self.typical;
        let mut builder = self.spare.pop().unwrap_or_else(|| {
            let mut builder =
                AggregateBuilder::with_capacity((bytes + bytes / 8).min(self.max_size));
            builder.reserve_keys(count + count / 8, (count + count / 8) * pk.len());
            builder
        });
        builder.add(pk, ehk, &p.record.data[..]);
        let mut records = self
            .spare_records
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(count + count / 8 + 1));
        let open = Open {
            builder,
            stream: p.record.stream.clone(),
            shard: shard.id.clone(),
            first_hash_key: p.hash_key,
            send_by,
            id,
            records: {
                records.push(p);
                records
            },
        };
        self.open.insert(shard.slot, open);
        if self.max_count <= 1 {
            self.close(shard.slot, out);
        }
    }

    /// Takes back the emptied record list of a resolved aggregate, for reuse.
    pub(crate) fn recycle(&mut self, records: Vec<Pending>) {
        if records.is_empty() && records.capacity() > 1 && self.spare_records.len() < SPARE_BUILDERS
        {
            self.spare_records.push(records);
        }
    }

    /// Closes every aggregate whose deadline is at or before `now`.
    pub(crate) fn close_due(&mut self, now: Instant, out: &mut Vec<KinesisRecord>) {
        while let Some(entry) = self.by_deadline.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let slot = entry.remove();
            self.close(slot, out);
        }
    }

    /// Closes every aggregate (flush, shutdown).
    pub(crate) fn close_all(&mut self, out: &mut Vec<KinesisRecord>) {
        let slots: Vec<u64> = self.open.keys().copied().collect();
        for slot in slots {
            self.close(slot, out);
        }
    }

    /// The earliest deadline of an open aggregate.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.by_deadline.first_key_value().map(|((at, _), _)| *at)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Sends the slot's open aggregate (if any) on its way.
    fn close(&mut self, slot: u64, out: &mut Vec<KinesisRecord>) {
        let Some(open) = self.open.remove(&slot) else {
            return;
        };
        self.by_deadline.remove(&(open.send_by, open.id));
        let mut records = open.records;
        let mut builder = open.builder;
        let data = if records.len() == 1 {
            builder.clear();
            None
        } else {
            Some(builder.finish_unsealed())
        };
        if self.spare.len() < SPARE_BUILDERS {
            self.spare.push(builder);
        }
        let Some(data) = data else {
            if let Some(p) = records.pop() {
                out.push(single(p, Some(open.shard), open.send_by));
            }
            return;
        };
        let len = data.framed_len();
        self.typical = (len, records.len());
        out.push(KinesisRecord {
            stream: open.stream,
            predicted_shard: Some(open.shard),
            partition_key: AGGREGATE_PARTITION_KEY.to_owned(),
            explicit_hash_key: Some(open.first_hash_key.to_string()),
            size: len + AGGREGATE_PARTITION_KEY.len(),
            data: Payload::Unsealed(data),
            user_records: records,
            send_by: open.send_by,
        });
    }
}

/// A user record sent alone, raw, with its own keys.
fn single(p: Pending, shard: Option<Arc<str>>, send_by: Instant) -> KinesisRecord {
    KinesisRecord {
        stream: p.record.stream.clone(),
        predicted_shard: shard,
        partition_key: p.record.partition_key.clone(),
        explicit_hash_key: p.record.explicit_hash_key.clone(),
        data: Payload::Ready(p.record.data.clone()),
        size: p.record.kinesis_size(),
        user_records: vec![p],
        send_by,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::pending::tests::pending;
    use kinesis_format::{Deaggregated, deaggregate};

    fn shard(s: &str) -> Option<&'static Shard> {
        let slot = s.bytes().map(u64::from).sum();
        Some(Box::leak(Box::new(Shard {
            id: Arc::from(s),
            slot,
        })))
    }

    #[tokio::test(start_paused = true)]
    async fn closes_when_the_next_record_would_not_fit() {
        let now = Instant::now();
        let mut agg = Aggregator::new(true, 1_000, usize::MAX, Duration::from_millis(100));
        let mut out = Vec::new();
        for i in 0..20 {
            agg.add(pending(&format!("k{i}"), 100, now), shard("s0"), &mut out);
        }
        assert!(!out.is_empty(), "20 records of 100 B cannot fit in 1,000 B");
        for k in &mut out {
            assert!(k.data.len() <= 1_000, "aggregate of {} bytes", k.data.len());
            assert!(k.aggregated());
            let data = k.data.take();
            let Deaggregated::Aggregated(subs) = deaggregate(&data) else {
                panic!("not an aggregate")
            };
            assert_eq!(subs.len(), k.user_records.len());
            assert_eq!(
                k.explicit_hash_key,
                Some(k.user_records[0].hash_key.to_string())
            );
        }
        let before = out.len();
        agg.close_all(&mut out);
        let total: usize = out.iter().map(|k| k.user_records.len()).sum();
        assert_eq!(total, 20);
        assert!(out.len() > before);
        assert!(agg.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn closes_at_max_count() {
        let now = Instant::now();
        let mut agg = Aggregator::new(true, 51_200, 3, Duration::from_secs(1));
        let mut out = Vec::new();
        for i in 0..7 {
            agg.add(pending(&format!("k{i}"), 10, now), shard("s0"), &mut out);
        }
        let sizes: Vec<usize> = out.iter().map(|k| k.user_records.len()).collect();
        assert_eq!(sizes, [3, 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn closes_at_the_earliest_records_deadline() {
        let start = Instant::now();
        let linger = Duration::from_millis(100);
        let mut agg = Aggregator::new(true, 51_200, usize::MAX, linger);
        let mut out = Vec::new();
        agg.add(pending("a", 10, start), shard("s0"), &mut out);
        agg.add(
            pending("b", 10, start + Duration::from_millis(60)),
            shard("s0"),
            &mut out,
        );
        assert_eq!(agg.next_deadline(), Some(start + linger));
        agg.close_due(start + Duration::from_millis(99), &mut out);
        assert!(out.is_empty());
        agg.close_due(start + linger, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].user_records.len(), 2);
        assert_eq!(agg.next_deadline(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_record_goes_raw_with_its_own_keys() {
        let now = Instant::now();
        let mut agg = Aggregator::new(true, 51_200, usize::MAX, Duration::from_millis(100));
        let mut out = Vec::new();
        agg.add(pending("solo", 10, now), shard("s0"), &mut out);
        agg.close_all(&mut out);
        assert_eq!(out.len(), 1);
        assert!(!out[0].aggregated());
        assert_eq!(out[0].partition_key, "solo");
        assert_eq!(out[0].data.len(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn oversize_or_unpredicted_or_disabled_goes_raw_at_once() {
        let now = Instant::now();
        let mut agg = Aggregator::new(true, 1_000, usize::MAX, Duration::from_millis(100));
        let mut out = Vec::new();
        agg.add(pending("small", 10, now), shard("s0"), &mut out);
        agg.add(pending("big", 5_000, now), shard("s0"), &mut out);
        agg.add(pending("lost", 10, now), None, &mut out);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|k| !k.aggregated()));
        assert!(!agg.is_empty(), "the small record still waits for company");

        let mut disabled = Aggregator::new(false, 51_200, usize::MAX, Duration::from_millis(100));
        let mut out = Vec::new();
        disabled.add(pending("x", 10, now), shard("s0"), &mut out);
        disabled.add(pending("y", 10, now), shard("s0"), &mut out);
        assert_eq!(out.len(), 2);
        assert!(disabled.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn shards_aggregate_separately() {
        let now = Instant::now();
        let mut agg = Aggregator::new(true, 51_200, usize::MAX, Duration::from_millis(100));
        let mut out = Vec::new();
        for i in 0..10 {
            agg.add(
                pending(&format!("k{i}"), 10, now),
                shard(if i % 2 == 0 { "s0" } else { "s1" }),
                &mut out,
            );
        }
        agg.close_all(&mut out);
        assert_eq!(out.len(), 2);
        for k in &out {
            assert_eq!(k.user_records.len(), 5);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ordered_a_large_record_does_not_overtake_and_raw_records_keep_their_shard() {
        let now = Instant::now();
        let mut agg =
            Aggregator::new(true, 1_000, usize::MAX, Duration::from_millis(100)).ordered(true);
        let mut out = Vec::new();
        agg.add(pending("small", 10, now), shard("s0"), &mut out);
        agg.add(pending("big", 5_000, now), shard("s0"), &mut out);
        let keys: Vec<&str> = out.iter().map(|k| k.partition_key.as_str()).collect();
        assert_eq!(keys, ["small", "big"], "the open aggregate goes first");
        assert!(agg.is_empty());

        let mut disabled =
            Aggregator::new(false, 51_200, usize::MAX, Duration::from_millis(100)).ordered(true);
        let mut out = Vec::new();
        disabled.add(pending("x", 10, now), shard("s0"), &mut out);
        assert_eq!(out[0].predicted_shard.as_deref(), Some("s0"));
    }
}
