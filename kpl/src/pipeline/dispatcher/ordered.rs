//! Ordered mode (`ProducerConfig::ordered`): each predicted shard is a line with at most one
//! Kinesis record on its way. A record's result frees its line; user records of it that must be
//! sent again wait at the front of their line (after their back-off) and are rebuilt into
//! aggregates there, so nothing put later is stored before them.
//!
//! Across a reshard: when a fresh map shows that a line's shard closed, the line's records not
//! yet sent (and the open aggregates) are rebuilt for the children, in order, behind what the
//! closed shard still has on its way, and every line whose range overlaps a closed shard's with
//! records still on their way (in flight, landed on another shard, or to be re-sent) waits
//! until they are stored: a child never stores a key's record before its parent's.
//!
//! Records with no predicted shard (the map has a gap) are not in any line and are not ordered.

use kinesis_format::HashKey;

use super::*;

impl Dispatcher {
    /// The queue of a shard, created on first use.
    pub(super) fn line(&mut self, key: &ShardKey) -> &mut ShardQueue {
        if !self.shards.contains_key(key) {
            let range = self
                .entry(&key.0)
                .and_then(|entry| entry.map().range_of(&key.1))
                .unwrap_or(ALL_KEYS);
            let q = ShardQueue::new(self.config.rate_limit_percent, range);
            self.shards.insert(key.clone(), q);
        }
        self.shards.get_mut(key).expect("inserted above")
    }

    /// A fresh map of `stream` arrived: lines of shards it shows closed send nothing more under
    /// their old prediction. Their queued records (and every open aggregate) are rebuilt for the
    /// children, and the lines that still have records on their way hold back the lines they
    /// overlap.
    pub(super) fn reshard_lines(&mut self, stream: &StreamId, map: &ShardMap) {
        let just_closed = |(s, shard): &ShardKey, q: &ShardQueue| {
            s == stream && !q.retired && !map.is_open(shard)
        };
        if !self.shards.iter().any(|(key, q)| just_closed(key, q)) {
            return;
        }
        // Records routed before the map changed may wait in open aggregates of a closed shard.
        let mut open_aggregates = Vec::new();
        self.aggregator.close_all(&mut open_aggregates);
        self.enqueue(open_aggregates);
        let closed: Vec<ShardKey> = self
            .shards
            .iter()
            .filter(|(key, q)| just_closed(key, q))
            .map(|(key, _)| key.clone())
            .collect();
        let now = Instant::now();
        for key in closed {
            let Some(q) = self.shards.get_mut(&key) else {
                continue;
            };
            q.retired = true;
            let range = q.range;
            let queued: Vec<Pending> = q
                .queue
                .drain(..)
                .flat_map(|record| record.user_records)
                .collect();
            for p in queued {
                self.redo(key.clone(), now, p);
            }
            if self.shards.get(&key).is_some_and(ShardQueue::outstanding) {
                let stale = self.stale.entry(stream.clone()).or_default();
                stale.push((range, key.1));
            }
        }
    }

    /// Forgets closed shards' lines that have nothing on its way any more.
    pub(super) fn prune_stale(&mut self) {
        if self.stale.is_empty() {
            return;
        }
        let shards = &self.shards;
        self.stale.retain(|stream, lines| {
            lines.retain(|(_, shard)| {
                shards
                    .get(&(stream.clone(), shard.clone()))
                    .is_some_and(ShardQueue::outstanding)
            });
            !lines.is_empty()
        });
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
        if let Some(key) = self.ordered_line(record) {
            self.line_key_done(key);
        }
    }

    pub(super) fn line_key_done(&mut self, key: ShardKey) {
        if let Some(q) = self.shards.get_mut(&key) {
            q.in_flight = false;
            q.parked = false;
            self.busy_shards.insert(key);
        }
    }

    /// Ordered mode: the line's record landed on another shard and waits for a fresh map; the
    /// line stays busy with it until then.
    pub(super) fn line_parked(&mut self, record: &KinesisRecord) {
        if let Some(key) = self.ordered_line(record)
            && let Some(q) = self.shards.get_mut(&key)
        {
            q.parked = true;
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

/// Every hash key: the range of a line whose shard the map does not know.
const ALL_KEYS: HashKeyRange = HashKeyRange {
    start: HashKey::MIN,
    end: HashKey(u128::MAX),
};

/// Whether two hash-key ranges share a key.
pub(super) fn overlap(a: &HashKeyRange, b: &HashKeyRange) -> bool {
    a.start <= b.end && b.start <= a.end
}
