//! An in-memory Kinesis (feature `memory`) for deterministic tests of the producer, the consumer
//! and users' own code, under tokio's paused clock:
//!
//! - streams of shards with hash key ranges; sequence numbers that grow across the stream;
//!   [`MemoryKinesis::split_shard`] and [`MemoryKinesis::merge_shards`] with parent links, and
//!   ChildShards at a closed shard's end;
//! - iterators of every type, expiring 5 minutes after they were issued
//!   (`ExpiredIteratorException`);
//! - per-shard limits ([`ShardLimits`], Kinesis' by default) that throttle writes per entry and
//!   reads per call with `ProvisionedThroughputExceededException`;
//! - enhanced fan-out: registered consumers, SubscribeToShard pushing new records for five
//!   minutes with continuations, one subscription per consumer and shard, and the children in
//!   a closed shard's last event;
//! - a latency per call, an outage switch (every call fails to connect), and seeded random
//!   faults ([`Faults`]): HTTP 500s, throttled calls, and calls that time out.
//!
//! Every random draw comes from one RNG seeded at creation, so the same calls in the same order
//! give the same answers.

mod fan_out;
mod state;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use kinesis_format::HashKey;
use kinesis_retry::{AwsError, AwsErrorKind};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

pub use state::ShardLimits;
use state::{Position, Refusal, StreamState, age_of, record};

use crate::Kinesis;
use crate::stream::StreamRef;
use crate::types::{
    IteratorStart, PutEntry, PutResult, RecordsPage, Shard, ShardFilter, StreamSummary,
};

/// How long an iterator stays valid.
const ITERATOR_LIFETIME: Duration = Duration::from_secs(300);
/// The most bytes one GetRecords call returns.
const MAX_GET_RECORDS_BYTES: usize = 10 * 1024 * 1024;

/// Random faults, as shares of calls from 0.0 to 1.0.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// Calls answered HTTP 500 `InternalFailure` (nothing done).
    pub internal_error: f64,
    /// Calls answered `ProvisionedThroughputExceededException` (nothing done).
    pub throttle: f64,
    /// Calls that hang for [`Faults::timeout_after`] and then fail as timed out (nothing done).
    pub timeout: f64,
    /// How long a timed-out call hangs.
    pub timeout_after: Duration,
}

#[derive(Debug)]
struct State {
    streams: BTreeMap<String, StreamState>,
    created: i64,
    limits: ShardLimits,
    faults: Faults,
    latency: Duration,
    outage: bool,
    panic_on_put: bool,
    rng: StdRng,
    /// Registered enhanced fan-out consumers by ARN: (stream, name).
    consumers: BTreeMap<String, (String, String)>,
    /// Open subscriptions by (consumer ARN, shard): (id, when it started).
    subscriptions: BTreeMap<(String, String), (u64, Duration)>,
    next_subscription: u64,
}

/// An in-memory Kinesis; see the module documentation.
#[derive(Debug)]
pub struct MemoryKinesis {
    /// Shared with open subscriptions.
    state: Arc<Mutex<State>>,
    started: Instant,
}

impl Default for MemoryKinesis {
    fn default() -> Self {
        Self::with_seed(0)
    }
}

fn refused(operation: &'static str, (code, message): Refusal) -> AwsError {
    let status = if code == "InternalFailure" { 500 } else { 400 };
    AwsError::new(
        operation,
        AwsErrorKind::Service {
            code: code.to_owned(),
            message,
            status: Some(status),
        },
    )
}

/// Where a reader starting at `start` begins in a shard's records.
fn start_index(records: &[state::Stored], start: &IteratorStart) -> Result<usize, Refusal> {
    let parse = |seq: &str| {
        seq.parse::<u128>().map_err(|_| {
            (
                "InvalidArgumentException",
                format!("{seq:?} is not a sequence number"),
            )
        })
    };
    Ok(match start {
        IteratorStart::TrimHorizon => 0,
        IteratorStart::Latest => records.len(),
        IteratorStart::AtTimestamp(at) => {
            let age = age_of(*at);
            records.partition_point(|r| r.arrival < age)
        }
        IteratorStart::AtSequence(seq) => {
            let seq = parse(seq)?;
            records.partition_point(|r| r.sequence < seq)
        }
        IteratorStart::AfterSequence(seq) => {
            let seq = parse(seq)?;
            records.partition_point(|r| r.sequence <= seq)
        }
    })
}

fn stream_name(stream: &StreamRef) -> &str {
    let s = stream.as_str();
    s.rsplit_once(":stream/").map_or(s, |(_, name)| name)
}

impl MemoryKinesis {
    /// An empty Kinesis whose faults draw from `seed`.
    pub fn with_seed(seed: u64) -> Self {
        MemoryKinesis {
            state: Arc::new(Mutex::new(State {
                streams: BTreeMap::new(),
                created: 1_700_000_000,
                limits: ShardLimits::default(),
                faults: Faults::default(),
                latency: Duration::ZERO,
                outage: false,
                panic_on_put: false,
                rng: StdRng::seed_from_u64(seed),
                consumers: BTreeMap::new(),
                subscriptions: BTreeMap::new(),
                next_subscription: 0,
            })),
            started: Instant::now(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// The per-shard limits of streams and shards created from now on.
    pub fn set_limits(&self, limits: ShardLimits) {
        self.state().limits = limits;
    }

    /// Creates a stream of `shards` shards splitting the hash key space evenly.
    pub fn create_stream(&self, name: &str, shards: u32) {
        let mut state = self.state();
        state.created += 1;
        let stream = StreamState::new(name, shards, state.created, state.limits);
        state.streams.insert(name.to_owned(), stream);
    }

    /// Deletes a stream: later calls for it fail with `ResourceNotFoundException`.
    pub fn delete_stream(&self, name: &str) {
        self.state().streams.remove(name);
    }

    /// Sets the stream's maximum record size (`UpdateMaxRecordSize`), which DescribeStreamSummary
    /// then reports; `None` reports nothing and keeps 1 MiB. PutRecords refuses a call holding a
    /// larger record, as Kinesis does (`ValidationException`).
    pub fn set_max_record_size_kib(&self, stream: &str, kib: Option<i32>) {
        if let Some(s) = self.state().streams.get_mut(stream) {
            s.max_record_size_kib = kib;
        }
    }

    /// Splits an open shard; the upper child starts at `at`.
    pub fn split_shard(&self, stream: &str, shard: &str, at: HashKey) -> Result<(), AwsError> {
        let mut state = self.state();
        let s =
            Self::stream_mut(&mut state, stream).map_err(|r| refused("Kinesis SplitShard", r))?;
        s.split(shard, at)
            .map_err(|r| refused("Kinesis SplitShard", r))
    }

    /// Merges two open adjacent shards.
    pub fn merge_shards(&self, stream: &str, shard: &str, adjacent: &str) -> Result<(), AwsError> {
        let mut state = self.state();
        let s =
            Self::stream_mut(&mut state, stream).map_err(|r| refused("Kinesis MergeShards", r))?;
        s.merge(shard, adjacent)
            .map_err(|r| refused("Kinesis MergeShards", r))
    }

    /// Replaces the random faults in force.
    pub fn set_faults(&self, faults: Faults) {
        self.state().faults = faults;
    }

    /// Every call waits this long first (default none).
    pub fn set_latency(&self, latency: Duration) {
        self.state().latency = latency;
    }

    /// While on, every call fails to connect (nothing done).
    pub fn set_outage(&self, outage: bool) {
        self.state().outage = outage;
    }

    /// While set, PutRecords panics, as a buggy adapter would (a caller must not hang or lose
    /// records because of it).
    pub fn set_panic_on_put(&self, panic: bool) {
        self.state().panic_on_put = panic;
    }

    fn stream_mut<'a>(state: &'a mut State, name: &str) -> Result<&'a mut StreamState, Refusal> {
        state.streams.get_mut(name).ok_or_else(|| {
            (
                "ResourceNotFoundException",
                format!("Stream {name} under account 000000000000 not found."),
            )
        })
    }

    /// The latency, the outage and the random faults, in that order, before a call.
    async fn enter(&self, operation: &'static str) -> Result<(), AwsError> {
        let latency = self.state().latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let (outage, fault, hang) = {
            let mut state = self.state();
            let f = state.faults.clone();
            let draw = state.rng.random::<f64>();
            let fault = if draw < f.internal_error {
                Some("InternalFailure")
            } else if draw < f.internal_error + f.throttle {
                Some("ProvisionedThroughputExceededException")
            } else if draw < f.internal_error + f.throttle + f.timeout {
                Some("Timeout")
            } else {
                None
            };
            (state.outage, fault, f.timeout_after)
        };
        if outage {
            return Err(AwsError::new(
                operation,
                AwsErrorKind::Connection {
                    message: "in-memory Kinesis outage".into(),
                },
            ));
        }
        match fault {
            None => Ok(()),
            Some("Timeout") => {
                tokio::time::sleep(hang).await;
                Err(AwsError::timeout(operation))
            }
            Some(code) => Err(refused(operation, (code, "injected fault".into()))),
        }
    }
}

#[async_trait]
impl Kinesis for MemoryKinesis {
    async fn describe_stream_summary(&self, stream: &StreamRef) -> Result<StreamSummary, AwsError> {
        const OP: &str = "Kinesis DescribeStreamSummary";
        self.enter(OP).await?;
        let mut state = self.state();
        let s = Self::stream_mut(&mut state, stream_name(stream)).map_err(|r| refused(OP, r))?;
        let arn = format!("arn:aws:kinesis:us-east-1:000000000000:stream/{}", s.name);
        let mut summary = StreamSummary::new(s.name.clone(), arn, s.created);
        summary.max_record_size_kib = s.max_record_size_kib;
        Ok(summary)
    }

    async fn list_shards(
        &self,
        stream: &StreamRef,
        filter: ShardFilter,
    ) -> Result<Vec<Shard>, AwsError> {
        const OP: &str = "Kinesis ListShards";
        self.enter(OP).await?;
        let mut state = self.state();
        let s = Self::stream_mut(&mut state, stream_name(stream)).map_err(|r| refused(OP, r))?;
        Ok(s.shards
            .values()
            .filter(|shard| filter == ShardFilter::All || !shard.closed)
            .map(|shard| s.view(shard))
            .collect())
    }

    async fn get_shard_iterator(
        &self,
        stream: &StreamRef,
        shard_id: &str,
        start: &IteratorStart,
    ) -> Result<String, AwsError> {
        const OP: &str = "Kinesis GetShardIterator";
        self.enter(OP).await?;
        let now = self.now();
        let mut state = self.state();
        let s = Self::stream_mut(&mut state, stream_name(stream)).map_err(|r| refused(OP, r))?;
        let shard = s.shard(shard_id).map_err(|r| refused(OP, r))?;
        let index = start_index(&shard.records, start).map_err(|r| refused(OP, r))?;
        Ok(Position {
            stream: s.name.clone(),
            shard: shard_id.to_owned(),
            index,
            issued: now,
        }
        .encode())
    }

    async fn get_records(&self, iterator: &str, limit: i32) -> Result<RecordsPage, AwsError> {
        const OP: &str = "Kinesis GetRecords";
        self.enter(OP).await?;
        let now = self.now();
        let position = Position::decode(iterator).map_err(|r| refused(OP, r))?;
        if now.saturating_sub(position.issued) > ITERATOR_LIFETIME {
            return Err(refused(
                OP,
                (
                    "ExpiredIteratorException",
                    format!("Iterator {iterator} expired"),
                ),
            ));
        }
        let mut state = self.state();
        let s = Self::stream_mut(&mut state, &position.stream).map_err(|r| refused(OP, r))?;
        let shard = s.shard_mut(&position.shard).map_err(|r| refused(OP, r))?;
        if !shard.reads.take(1.0, now) {
            return Err(refused(
                OP,
                (
                    "ProvisionedThroughputExceededException",
                    format!("Rate exceeded for shard {}", shard.id),
                ),
            ));
        }
        let limit = usize::try_from(limit.clamp(1, 10_000)).unwrap_or(1);
        let mut end = position.index.min(shard.records.len());
        let mut bytes = 0;
        while end < shard.records.len() && end - position.index < limit {
            let size = shard.records[end].data.len() + shard.records[end].partition_key.len();
            if bytes + size > MAX_GET_RECORDS_BYTES && end > position.index {
                break;
            }
            bytes += size;
            end += 1;
        }
        // Over the byte rate: this call is refused (as Kinesis refuses the next one).
        if bytes > 0 && !shard.read_bytes.take(bytes as f64, now) {
            return Err(refused(
                OP,
                (
                    "ProvisionedThroughputExceededException",
                    format!("Rate exceeded for shard {}", shard.id),
                ),
            ));
        }
        let records: Vec<_> = shard.records[position.index.min(end)..end]
            .iter()
            .map(record)
            .collect();
        let at_end = end == shard.records.len();
        let millis_behind = if at_end {
            0
        } else {
            i64::try_from(now.saturating_sub(shard.records[end].arrival).as_millis())
                .unwrap_or(i64::MAX)
        };
        let shard_id = shard.id.clone();
        let closed_and_read = shard.closed && at_end;
        let shard = s.shard(&shard_id).map_err(|r| refused(OP, r))?;
        let mut page = RecordsPage::new(records, None);
        page.millis_behind_latest = Some(millis_behind);
        if closed_and_read {
            page.child_shards = s.children_of(shard);
        } else {
            page.next_iterator = Some(
                Position {
                    index: end,
                    issued: now,
                    ..position
                }
                .encode(),
            );
        }
        Ok(page)
    }

    async fn put_records(
        &self,
        stream: &StreamRef,
        entries: Vec<PutEntry>,
    ) -> Result<Vec<PutResult>, AwsError> {
        const OP: &str = "Kinesis PutRecords";
        self.enter(OP).await?;
        assert!(!self.state().panic_on_put, "injected panic in {OP}");
        let now = self.now();
        let mut state = self.state();
        let s = Self::stream_mut(&mut state, stream_name(stream)).map_err(|r| refused(OP, r))?;
        let max = s.max_record_size();
        if let Some((i, e)) = entries
            .iter()
            .enumerate()
            .find(|(_, e)| e.data.len() + e.partition_key.len() > max)
        {
            let message = format!(
                "1 validation error detected: Value at 'records.{}.member.data' failed to satisfy constraint: Member must have length less than or equal to {max} ({} bytes with its partition key)",
                i + 1,
                e.data.len() + e.partition_key.len()
            );
            return Err(refused(OP, ("ValidationException", message)));
        }
        let mut results = Vec::with_capacity(entries.len());
        for e in entries {
            let key = match HashKey::for_record(&e.partition_key, e.explicit_hash_key.as_deref()) {
                Ok(key) => key,
                Err(err) => {
                    return Err(refused(OP, ("InvalidArgumentException", err.to_string())));
                }
            };
            results.push(match s.put(key, e.partition_key, e.data, now) {
                Ok((shard_id, sequence)) => PutResult::Stored {
                    shard_id,
                    sequence_number: sequence.to_string(),
                },
                Err((code, message)) => PutResult::Failed {
                    code: code.to_owned(),
                    message,
                },
            });
        }
        Ok(results)
    }

    async fn register_stream_consumer(
        &self,
        stream_arn: &str,
        name: &str,
    ) -> Result<crate::StreamConsumer, AwsError> {
        self.register(stream_arn, name).await
    }

    async fn describe_stream_consumer(
        &self,
        stream_arn: &str,
        name: &str,
    ) -> Result<crate::StreamConsumer, AwsError> {
        self.describe(stream_arn, name).await
    }

    async fn subscribe_to_shard(
        &self,
        consumer_arn: &str,
        shard_id: &str,
        start: &IteratorStart,
    ) -> Result<Box<dyn crate::Subscription>, AwsError> {
        self.subscribe(consumer_arn, shard_id, start).await
    }
}
