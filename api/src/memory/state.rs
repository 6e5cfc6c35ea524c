//! The in-memory Kinesis's state: streams of shards with hash key ranges, records with
//! sequence numbers, splits and merges, per-shard rate limits, iterators. Pure: time comes in as
//! an argument, measured from the Kinesis's creation on tokio's clock.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kinesis_format::{HashKey, HashKeyRange};

use crate::types::{ChildShard, Record, Shard};

/// Sequence numbers start here (no leading zeros, ordered numerically as strings of one length).
const FIRST_SEQUENCE: u128 = 100_000_000_000_000_000_000;

/// A token bucket: `rate` per second, holding at most one second's worth.
#[derive(Clone, Debug)]
pub(super) struct Bucket {
    rate: f64,
    tokens: f64,
    at: Duration,
}

impl Bucket {
    pub(super) fn new(rate: f64) -> Self {
        Bucket {
            rate,
            tokens: rate,
            at: Duration::ZERO,
        }
    }

    /// Takes `n` tokens if there are that many at `now`. More than a second's worth (a record
    /// above 1 MiB on a stream whose limit was raised) is taken from a full bucket, which then
    /// stays in debt until refilled.
    pub(super) fn take(&mut self, n: f64, now: Duration) -> bool {
        let elapsed = now.saturating_sub(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.at = now;
        if self.tokens >= n.min(self.rate) {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

/// One stored record.
#[derive(Clone, Debug)]
pub(super) struct Stored {
    pub(super) sequence: u128,
    pub(super) partition_key: String,
    pub(super) data: Bytes,
    pub(super) arrival: Duration,
}

/// One shard.
#[derive(Clone, Debug)]
pub(super) struct ShardState {
    pub(super) id: String,
    pub(super) parents: Vec<String>,
    pub(super) range: HashKeyRange,
    pub(super) records: Vec<Stored>,
    pub(super) closed: bool,
    pub(super) children: Vec<String>,
    pub(super) writes: Bucket,
    pub(super) write_bytes: Bucket,
    pub(super) reads: Bucket,
    pub(super) read_bytes: Bucket,
}

/// Per-shard limits, per second (Kinesis': 1,000 records and 1 MiB in; 5 reads and 2 MiB out).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ShardLimits {
    /// Records written per second.
    pub write_records: f64,
    /// Bytes written per second (data + partition key).
    pub write_bytes: f64,
    /// GetRecords calls per second.
    pub read_calls: f64,
    /// Bytes read per second.
    pub read_bytes: f64,
}

impl Default for ShardLimits {
    fn default() -> Self {
        ShardLimits {
            write_records: 1_000.0,
            write_bytes: 1_048_576.0,
            read_calls: 5.0,
            read_bytes: 2.0 * 1_048_576.0,
        }
    }
}

impl ShardLimits {
    /// No limits at all.
    pub fn unlimited() -> Self {
        ShardLimits {
            write_records: f64::MAX,
            write_bytes: f64::MAX,
            read_calls: f64::MAX,
            read_bytes: f64::MAX,
        }
    }
}

/// One stream.
#[derive(Clone, Debug)]
pub(super) struct StreamState {
    pub(super) name: String,
    pub(super) created: i64,
    pub(super) shards: BTreeMap<String, ShardState>,
    next_shard: u32,
    next_sequence: u128,
    limits: ShardLimits,
    /// The largest record it takes, in KiB, as DescribeStreamSummary reports it; `None`: not
    /// reported, and 1 MiB is the limit.
    pub(super) max_record_size_kib: Option<i32>,
}

/// Why an operation on the state failed: (code, message).
pub(super) type Refusal = (&'static str, String);

fn invalid(message: String) -> Refusal {
    ("InvalidArgumentException", message)
}

impl StreamState {
    /// A stream of `shards` shards splitting the hash key space evenly.
    pub(super) fn new(name: &str, shards: u32, created: i64, limits: ShardLimits) -> Self {
        let mut stream = StreamState {
            name: name.to_owned(),
            created,
            shards: BTreeMap::new(),
            next_shard: 0,
            next_sequence: FIRST_SEQUENCE,
            limits,
            max_record_size_kib: None,
        };
        let n = u128::from(shards.max(1));
        let width = u128::MAX / n;
        for i in 0..n {
            let start = i * width;
            let end = if i + 1 == n {
                u128::MAX
            } else {
                (i + 1) * width - 1
            };
            let range = HashKeyRange::new(HashKey(start), HashKey(end)).expect("start <= end");
            stream.add_shard(Vec::new(), range);
        }
        stream
    }

    fn add_shard(&mut self, parents: Vec<String>, range: HashKeyRange) -> String {
        let id = format!("shardId-{:012}", self.next_shard);
        self.next_shard += 1;
        let l = self.limits;
        self.shards.insert(
            id.clone(),
            ShardState {
                id: id.clone(),
                parents,
                range,
                records: Vec::new(),
                closed: false,
                children: Vec::new(),
                writes: Bucket::new(l.write_records),
                write_bytes: Bucket::new(l.write_bytes),
                reads: Bucket::new(l.read_calls),
                read_bytes: Bucket::new(l.read_bytes),
            },
        );
        id
    }

    pub(super) fn shard(&self, id: &str) -> Result<&ShardState, Refusal> {
        self.shards.get(id).ok_or_else(|| {
            (
                "ResourceNotFoundException",
                format!("Shard {id} in stream {} does not exist", self.name),
            )
        })
    }

    pub(super) fn shard_mut(&mut self, id: &str) -> Result<&mut ShardState, Refusal> {
        let name = self.name.clone();
        self.shards.get_mut(id).ok_or_else(|| {
            (
                "ResourceNotFoundException",
                format!("Shard {id} in stream {name} does not exist"),
            )
        })
    }

    /// The largest record (data + partition key) it takes, in bytes.
    pub(super) fn max_record_size(&self) -> usize {
        let kib = self.max_record_size_kib.unwrap_or(1024);
        usize::try_from(kib).unwrap_or(0) * 1024
    }

    /// Stores one record on the open shard owning `key`, if its limits allow; its sequence.
    pub(super) fn put(
        &mut self,
        key: HashKey,
        partition_key: String,
        data: Bytes,
        now: Duration,
    ) -> Result<(String, u128), Refusal> {
        let shard = self
            .shards
            .values_mut()
            .find(|s| !s.closed && s.range.contains(key))
            .expect("the open shards cover every hash key");
        let size = (data.len() + partition_key.len()) as f64;
        if !shard.writes.take(1.0, now) || !shard.write_bytes.take(size, now) {
            return Err((
                "ProvisionedThroughputExceededException",
                format!(
                    "Rate exceeded for shard {} in stream {}",
                    shard.id, self.name
                ),
            ));
        }
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        shard.records.push(Stored {
            sequence,
            partition_key,
            data,
            arrival: now,
        });
        Ok((shard.id.clone(), sequence))
    }

    /// Splits an open shard at `at` (the first hash key of the upper child).
    pub(super) fn split(&mut self, id: &str, at: HashKey) -> Result<(), Refusal> {
        let range = self.open_shard(id)?.range;
        if at.0 <= range.start.0 || at.0 > range.end.0 {
            return Err(invalid(format!("{at} does not split {id}'s range")));
        }
        let lower = HashKeyRange::new(range.start, HashKey(at.0 - 1)).expect("ordered");
        let upper = HashKeyRange::new(at, range.end).expect("ordered");
        let a = self.add_shard(vec![id.to_owned()], lower);
        let b = self.add_shard(vec![id.to_owned()], upper);
        self.close(id, vec![a, b]);
        Ok(())
    }

    /// Merges two open adjacent shards.
    pub(super) fn merge(&mut self, id: &str, adjacent: &str) -> Result<(), Refusal> {
        let (a, b) = (self.open_shard(id)?.range, self.open_shard(adjacent)?.range);
        let (low, high) = if a.start.0 < b.start.0 {
            (a, b)
        } else {
            (b, a)
        };
        if low.end.0.checked_add(1) != Some(high.start.0) {
            return Err(invalid(format!("{id} and {adjacent} are not adjacent")));
        }
        let range = HashKeyRange::new(low.start, high.end).expect("ordered");
        let child = self.add_shard(vec![id.to_owned(), adjacent.to_owned()], range);
        self.close(id, vec![child.clone()]);
        self.close(adjacent, vec![child]);
        Ok(())
    }

    fn open_shard(&self, id: &str) -> Result<&ShardState, Refusal> {
        let shard = self.shard(id)?;
        if shard.closed {
            return Err(("ResourceInUseException", format!("{id} is closed")));
        }
        Ok(shard)
    }

    fn close(&mut self, id: &str, children: Vec<String>) {
        let shard = self.shards.get_mut(id).expect("checked");
        shard.closed = true;
        shard.children = children;
    }

    /// The shard as the API shows it.
    pub(super) fn view(&self, shard: &ShardState) -> Shard {
        Shard::new(
            shard.id.clone(),
            shard.parents.clone(),
            shard.range,
            shard.closed,
        )
    }

    /// A closed shard's children as GetRecords announces them.
    pub(super) fn children_of(&self, shard: &ShardState) -> Vec<ChildShard> {
        shard
            .children
            .iter()
            .filter_map(|c| self.shards.get(c))
            .map(|c| ChildShard::new(c.id.clone(), c.parents.clone(), Some(c.range)))
            .collect()
    }
}

/// A record as GetRecords returns it; arrival times count from the Unix epoch plus the
/// Kinesis's age, so they are deterministic under a paused clock.
pub(super) fn record(stored: &Stored) -> Record {
    let mut r = Record::new(
        stored.sequence.to_string(),
        stored.partition_key.clone(),
        stored.data.clone(),
    );
    r.approximate_arrival = Some(UNIX_EPOCH + stored.arrival);
    r
}

/// The age a wall-clock time stands for (the inverse of [`record`]'s arrival times).
pub(super) fn age_of(at: SystemTime) -> Duration {
    at.duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// An iterator's contents, written into the iterator string itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Position {
    pub(super) stream: String,
    pub(super) shard: String,
    /// The index of the next record to read.
    pub(super) index: usize,
    /// When the iterator was issued.
    pub(super) issued: Duration,
}

impl Position {
    pub(super) fn encode(&self) -> String {
        format!(
            "{}|{}|{}|{}",
            self.stream,
            self.shard,
            self.index,
            self.issued.as_nanos()
        )
    }

    pub(super) fn decode(text: &str) -> Result<Position, Refusal> {
        let bad = || invalid(format!("shard iterator {text:?} is not valid"));
        let mut parts = text.rsplitn(4, '|');
        let issued = parts
            .next()
            .and_then(|p| p.parse::<u64>().ok())
            .ok_or_else(bad)?;
        let index = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let shard = parts.next().ok_or_else(bad)?.to_owned();
        let stream = parts.next().ok_or_else(bad)?.to_owned();
        Ok(Position {
            stream,
            shard,
            index,
            issued: Duration::from_nanos(issued),
        })
    }
}
