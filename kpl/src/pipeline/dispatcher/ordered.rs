//! Ordered mode (`ProducerConfig::ordered`): each predicted shard is a line with at most one
//! Kinesis record on its way. A record's result frees its line; user records of it that must be
//! sent again wait at the front of their line (after their back-off) and are rebuilt into
//! aggregates there, so nothing put later is stored before them.
//!
//! Records with no predicted shard (the map has a gap) are not in any line and are not ordered.

use super::*;

impl Dispatcher {
    /// The queue of a shard, created on first use.
    pub(super) fn line(&mut self, key: &ShardKey) -> &mut ShardQueue {
        let percent = self.config.rate_limit_percent;
        self.shards
            .entry(key.clone())
            .or_insert_with(|| ShardQueue::new(percent))
    }

    /// The line a record's re-sends go back to: its predicted shard's, in ordered mode.
    pub(super) fn ordered_line(&self, record: &KinesisRecord) -> Option<ShardKey> {
        let shard = record
            .predicted_shard
            .as_ref()
            .filter(|_| self.config.ordered)?;
        Some((record.stream.clone(), shard.clone()))
    }

    /// A record's result is in (or it expired before it was sent): its line may move on.
    pub(super) fn line_done(&mut self, record: &KinesisRecord) {
        if let Some(key) = self.ordered_line(record)
            && let Some(q) = self.shards.get_mut(&key)
        {
            q.in_flight = false;
            self.busy_shards.insert(key);
        }
    }

    /// Puts a user record to be re-sent at the front of its line, no earlier than `at`. The line
    /// waits for the latest back-off of its records.
    pub(super) fn redo(&mut self, key: ShardKey, at: Instant, p: Pending) {
        let q = self.line(&key);
        q.redo.push(p);
        q.redo_at = Some(q.redo_at.map_or(at, |t| t.max(at)));
        self.busy_shards.insert(key);
    }

    /// Lines whose re-sends are due: their records (in put order, the expired ones failed) are
    /// rebuilt with the current map and put at the front of their lines.
    pub(super) fn redo_due(&mut self, now: Instant) {
        let due: Vec<ShardKey> = self
            .busy_shards
            .iter()
            .filter(|key| {
                self.shards
                    .get(*key)
                    .is_some_and(|q| q.redo_at.is_some_and(|at| at <= now))
            })
            .cloned()
            .collect();
        for key in due {
            let Some(q) = self.shards.get_mut(&key) else {
                continue;
            };
            q.redo_at = None;
            let mut records = std::mem::take(&mut q.redo);
            // Put order (records of one line that failed apart, after a reshard, interleave).
            records.sort_by_key(|p| p.arrival);
            let mut rebuilt = Vec::new();
            for p in records {
                if now >= p.arrival + self.config.record_ttl {
                    self.expire(p);
                    continue;
                }
                let Some(entry) = self.entry(&p.record.stream) else {
                    self.give_up(p, PutErrorKind::Stopped);
                    continue;
                };
                let map = entry.map();
                let shard = map.predict(p.hash_key);
                self.rebuilder.add(p, shard, &mut rebuilt);
            }
            self.rebuilder.close_all(&mut rebuilt);
            // Each line's rebuilt records go before its queue, in their own order.
            for record in rebuilt.into_iter().rev() {
                match record.predicted_shard.clone() {
                    Some(shard) => {
                        let key = (record.stream.clone(), shard);
                        self.line(&key).queue.push_front(record);
                        self.busy_shards.insert(key);
                    }
                    None => self.collector.push(record),
                }
            }
        }
    }
}
