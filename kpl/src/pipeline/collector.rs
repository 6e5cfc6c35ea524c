//! Packs Kinesis records into PutRecords calls: per stream, at most `collection_max_count` records
//! and `collection_max_size` bytes. A stream's queue is sent when a call is full, when its
//! earliest record's send-by time has come, or on flush.

use std::collections::VecDeque;

use foldhash::HashMap;

use tokio::time::Instant;

use super::pending::{KinesisRecord, StreamId};

#[derive(Debug, Default)]
struct StreamQueue {
    records: VecDeque<KinesisRecord>,
    bytes: usize,
    earliest: Option<Instant>,
}

#[derive(Debug)]
pub(crate) struct Collector {
    max_count: usize,
    max_size: usize,
    streams: HashMap<StreamId, StreamQueue>,
}

impl Collector {
    pub(crate) fn new(max_count: usize, max_size: usize) -> Self {
        Collector {
            max_count,
            max_size,
            streams: HashMap::default(),
        }
    }

    pub(crate) fn push(&mut self, record: KinesisRecord) {
        let q = self.streams.entry(record.stream.clone()).or_default();
        q.bytes += record.size();
        q.earliest = Some(q.earliest.map_or(record.send_by, |e| e.min(record.send_by)));
        q.records.push_back(record);
    }

    /// The next call to make: a full one, a due one, or (with `force`) any non-empty one.
    pub(crate) fn next_batch(
        &mut self,
        now: Instant,
        force: bool,
    ) -> Option<(StreamId, Vec<KinesisRecord>)> {
        let (max_count, max_size) = (self.max_count, self.max_size);
        let stream = self
            .streams
            .iter()
            .find(|(_, q)| {
                force
                    || q.records.len() >= max_count
                    || q.bytes >= max_size
                    || q.earliest.is_some_and(|e| e <= now)
            })
            .map(|(s, _)| s.clone())?;
        let q = self.streams.get_mut(&stream)?;
        let mut batch = Vec::new();
        let mut bytes = 0;
        while let Some(front) = q.records.front() {
            let size = front.size();
            if batch.len() == max_count || (!batch.is_empty() && bytes + size > max_size) {
                break;
            }
            bytes += size;
            batch.extend(q.records.pop_front());
        }
        q.bytes -= bytes;
        q.earliest = q.records.iter().map(|r| r.send_by).min();
        if q.records.is_empty() {
            self.streams.remove(&stream);
        }
        Some((stream, batch))
    }

    /// When the next not-yet-full stream queue becomes due.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.streams.values().filter_map(|q| q.earliest).min()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::pipeline::pending::Payload;
    use crate::pipeline::pending::tests::pending;

    fn record(stream: &str, size: usize, send_by: Instant) -> KinesisRecord {
        KinesisRecord {
            stream: Arc::from(stream),
            predicted_shard: None,
            partition_key: "k".into(),
            explicit_hash_key: None,
            data: Payload::Ready(Bytes::from(vec![0u8; size - 1])),
            size,
            user_records: vec![pending("k", 1, send_by)],
            send_by,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn waits_for_a_full_call_or_the_deadline() {
        let now = Instant::now();
        let later = now + Duration::from_millis(100);
        let mut c = Collector::new(3, 1_000);
        c.push(record("s", 10, later));
        c.push(record("s", 10, later));
        assert!(c.next_batch(now, false).is_none());
        assert_eq!(c.next_deadline(), Some(later));
        c.push(record("s", 10, later));
        let (_, batch) = c.next_batch(now, false).expect("three records fill a call");
        assert_eq!(batch.len(), 3);
        assert!(c.is_empty());

        c.push(record("s", 10, later));
        assert!(
            c.next_batch(later - Duration::from_millis(1), false)
                .is_none()
        );
        assert_eq!(c.next_batch(later, false).map(|(_, b)| b.len()), Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn never_exceeds_count_or_bytes() {
        let now = Instant::now();
        let mut c = Collector::new(500, 1_000);
        for _ in 0..25 {
            c.push(record("s", 90, now));
        }
        let mut sizes = Vec::new();
        while let Some((_, batch)) = c.next_batch(now, false) {
            let bytes: usize = batch.iter().map(KinesisRecord::size).sum();
            assert!(bytes <= 1_000, "{bytes}");
            sizes.push(batch.len());
        }
        assert_eq!(sizes, [11, 11, 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_oversize_record_goes_alone() {
        let now = Instant::now();
        let mut c = Collector::new(500, 100);
        c.push(record("s", 500, now));
        c.push(record("s", 10, now));
        assert_eq!(c.next_batch(now, false).map(|(_, b)| b.len()), Some(1));
        assert_eq!(c.next_batch(now, false).map(|(_, b)| b.len()), Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn streams_are_batched_separately_and_force_sends_early() {
        let now = Instant::now();
        let later = now + Duration::from_secs(1);
        let mut c = Collector::new(500, 1_000_000);
        c.push(record("a", 10, later));
        c.push(record("b", 10, later));
        c.push(record("a", 10, later));
        assert!(c.next_batch(now, false).is_none());
        let mut got = Vec::new();
        while let Some((stream, batch)) = c.next_batch(now, true) {
            assert!(batch.iter().all(|r| r.stream == stream));
            got.push((stream.to_string(), batch.len()));
        }
        got.sort();
        assert_eq!(got, [("a".to_owned(), 2), ("b".to_owned(), 1)]);
    }
}
