//! The background task that owns the pipeline: it takes records from the handle, drives them
//! through aggregator → limiter → collector, starts PutRecords calls, and turns their results
//! into resolved futures, retries, map refreshes and re-sends.

use std::collections::BTreeMap;

use foldhash::{HashMap, HashSet};
use kinesis_format::{HashKey, HashKeyRange};
use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::aggregator::Aggregator;
use super::capacity::{Capacity, bytes_of};
use super::collector::Collector;
use super::epochs::Epochs;
use super::inbox::Inbox;
use super::pending::{Incoming, KinesisRecord, Pending, Retry, StreamId, seal_all};
use super::retry::{Backoff, Class, classify_call, classify_code};
use super::shard_map::ShardMap;
use super::streams::{StreamEntry, Streams, begin_refresh, end_refresh};
use super::unwind::CatchUnwind;
use crate::config::ProducerConfig;
use crate::error::PutErrorKind;
use crate::kinesis::{CallError, EntryResult, KinesisApi, PutEntry};
use crate::record::{Attempt, AttemptError, StoredAt};
use crate::stats::{Counters, kpl_metrics};
use line::ShardQueue;

mod intake;
mod line;
mod maintenance;
mod ordered;
mod outcome;

/// What the handle sends the dispatcher.
#[derive(Debug)]
// Unboxed on purpose: a Box per record, allocated by the caller's thread and freed by the
// dispatcher's, costs more (measured with glibc malloc) than moving the record through the channel.
pub(crate) enum Command {
    Put(Incoming),
    Flush,
    /// Flush, and tell the sender once every record received before this command has resolved.
    FlushAndWait(oneshot::Sender<()>),
    Shutdown,
}

/// The inbox's capacity: at most this many commands are taken per loop turn before the pipeline
/// is driven, and senders blocked on a full inbox are woken once per batch.
pub(crate) const COMMAND_BATCH: usize = 4096;
/// How often scheduled map refreshes and published shard rates are checked.
const TICK: Duration = Duration::from_secs(1);

type ShardKey = (StreamId, Arc<str>);

/// A finished PutRecords call.
#[derive(Debug)]
struct Completion {
    records: Vec<KinesisRecord>,
    started: Instant,
    duration: Duration,
    result: Result<Vec<EntryResult>, CallError>,
}

/// An aggregate stored on a shard other than the predicted one, waiting for a fresh map to tell
/// which of its user records that shard owns.
#[derive(Debug)]
struct Landed {
    record: KinesisRecord,
    shard_id: String,
    sequence_number: String,
    started: Instant,
    duration: Duration,
    listed_all: bool,
}

#[derive(Debug)]
struct Refreshed {
    entry: Arc<StreamEntry>,
    ok: bool,
}

pub(crate) struct Dispatcher {
    config: Arc<ProducerConfig>,
    api: Arc<dyn KinesisApi>,
    streams: Arc<Streams>,
    counters: Arc<Counters>,
    capacity: Arc<Capacity>,
    epochs: Epochs,
    commands: Arc<Inbox<Command>>,
    /// The streams seen so far (a local copy of `streams`' entries).
    entries: HashMap<StreamId, Arc<StreamEntry>>,
    aggregator: Aggregator,
    /// Ordered mode: rebuilds the aggregates of records re-sent at the front of their line.
    rebuilder: Aggregator,
    shards: HashMap<ShardKey, ShardQueue>,
    busy_shards: HashSet<ShardKey>,
    collector: Collector,
    retries: BTreeMap<(Instant, u64), Pending>,
    retry_seq: u64,
    parked: HashMap<StreamId, Vec<Landed>>,
    requests: JoinSet<Completion>,
    refreshes: JoinSet<Refreshed>,
    next_tick: Instant,
    last_refresh: HashMap<StreamId, Instant>,
    flushing: bool,
    shutting_down: bool,
    rng: StdRng,
    /// Ordered mode: per stream, the lines of shards closed by a reshard that still have records
    /// on their way; a line whose range overlaps one of them waits (see `ordered.rs`).
    stale: HashMap<StreamId, Vec<(HashKeyRange, Arc<str>)>>,
    /// Calls allowed in flight (cut when the endpoint is slow or failing).
    concurrency: crate::pipeline::concurrency::Concurrency,
}

impl Dispatcher {
    pub(crate) fn new(
        config: Arc<ProducerConfig>,
        api: Arc<dyn KinesisApi>,
        streams: Arc<Streams>,
        counters: Arc<Counters>,
        capacity: Arc<Capacity>,
        commands: Arc<Inbox<Command>>,
    ) -> Self {
        let concurrency =
            crate::pipeline::concurrency::Concurrency::new(config.max_concurrent_requests);
        Counters::set(&counters.concurrency_limit, concurrency.limit() as u64);
        let aggregator = || {
            Aggregator::new(
                config.aggregation_enabled,
                config.aggregation_max_size,
                config.aggregation_max_count,
                config.record_max_buffered_time,
            )
            .ordered(config.ordered)
        };
        Dispatcher {
            aggregator: aggregator(),
            rebuilder: aggregator(),
            collector: Collector::new(config.collection_max_count, config.collection_max_size),
            config,
            api,
            streams,
            counters,
            capacity,
            epochs: Epochs::default(),
            commands,
            entries: HashMap::default(),
            shards: HashMap::default(),
            busy_shards: HashSet::default(),
            retries: BTreeMap::new(),
            retry_seq: 0,
            parked: HashMap::default(),
            requests: JoinSet::new(),
            refreshes: JoinSet::new(),
            next_tick: Instant::now() + TICK,
            last_refresh: HashMap::default(),
            flushing: false,
            shutting_down: false,
            rng: StdRng::from_rng(&mut rand::rng()),
            stale: HashMap::default(),
            concurrency,
        }
    }

    pub(crate) async fn run(mut self) {
        // Commands are taken in bulk: one wake-up of a blocked sender per batch, not per record.
        let mut inbox = Vec::with_capacity(COMMAND_BATCH);
        loop {
            let wake = self.next_wake();
            tokio::select! {
                // Both tasks catch panics of the calls they make, so a task fails only if it is
                // cancelled (the runtime shutting down): nothing is left to act on then.
                Some(done) = self.requests.join_next(), if !self.requests.is_empty() => {
                    match done {
                        Ok(completion) => self.on_completion(completion),
                        Err(e) => tracing::error!(error = %e, "PutRecords task ended without its records: their futures fail as Stopped"),
                    }
                }
                Some(done) = self.refreshes.join_next(), if !self.refreshes.is_empty() => {
                    match done {
                        Ok(refreshed) => self.on_refreshed(refreshed),
                        Err(e) => tracing::error!(error = %e, "shard map refresh task ended without a result"),
                    }
                }
                open = self.commands.recv_all(&mut inbox), if !self.shutting_down => {
                    if !open {
                        // Every handle is gone: drain what was accepted, then stop.
                        self.shutting_down = true;
                    }
                    self.on_commands(&mut inbox);
                }
                () = tokio::time::sleep_until(wake) => {}
            }
            let now = Instant::now();
            self.drive(now);
            self.epochs.notify();
            if self.shutting_down && self.idle() {
                break;
            }
        }
        // Anything that raced in after shutdown began gets its record back.
        self.commands.close();
        for command in self.commands.take_all() {
            if let Command::Put(incoming) = command {
                let p = incoming.into_pending(HashKey::MIN, Instant::now(), 0);
                self.give_up(p, PutErrorKind::Stopped);
            }
        }
        tracing::debug!("producer dispatcher stopped");
    }

    fn idle(&self) -> bool {
        self.aggregator.is_empty()
            && self.busy_shards.is_empty()
            && self.collector.is_empty()
            && self.retries.is_empty()
            && self.parked.is_empty()
            && self.requests.is_empty()
    }

    fn enqueue(&mut self, records: Vec<KinesisRecord>) {
        for record in records {
            match &record.predicted_shard {
                Some(shard) => {
                    let key = (record.stream.clone(), shard.clone());
                    self.line(&key).queue.push_back(record);
                    self.busy_shards.insert(key);
                }
                None => self.collector.push(record),
            }
        }
    }

    /// Moves everything along that can move at `now`.
    fn drive(&mut self, now: Instant) {
        // Retries whose back-off is over.
        while let Some(entry) = self.retries.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let p = entry.remove();
            if now >= p.arrival + self.config.record_ttl {
                self.expire(p);
            } else {
                self.reroute(p);
            }
        }

        let mut closed = Vec::new();
        if self.flushing {
            self.aggregator.close_all(&mut closed);
        } else {
            self.aggregator.close_due(now, &mut closed);
        }
        self.enqueue(closed);
        if self.config.ordered {
            self.redo_due(now);
        }

        // Limiters release what their buckets allow (ordered mode: one record per line at a
        // time, and none while a re-send waits).
        // Taken out and put back: no key is cloned (a clone would touch the stream name's
        // reference count, which callers' threads change with every record).
        let ordered = self.config.ordered;
        let linger = self.config.record_max_buffered_time;
        if ordered {
            self.prune_stale();
        }
        let mut busy = std::mem::take(&mut self.busy_shards);
        busy.retain(|key| {
            let Some(q) = self.shards.get_mut(key) else {
                return false;
            };
            let behind_a_parent = ordered
                && self.stale.get(&key.0).is_some_and(|stale| {
                    stale
                        .iter()
                        .any(|(range, shard)| *shard != key.1 && ordered::overlap(range, &q.range))
                });
            while let Some(front) = q.queue.front() {
                if !q.may_send(ordered) || behind_a_parent {
                    break;
                }
                if !q.limiter.try_acquire(now, front.size()) {
                    q.rate_limited = true;
                    break;
                }
                if let Some(mut record) = q.queue.pop_front() {
                    if q.rate_limited && !ordered {
                        // Released at the shard's rate, one by one: a call per record would cost
                        // more than the wait to share one (the shard is the bottleneck anyway).
                        // Not in ordered mode, where the line waits for each call.
                        record.send_by = record.send_by.max(now + linger);
                    }
                    q.in_flight = ordered;
                    self.collector.push(record);
                }
            }
            if q.queue.is_empty() {
                q.rate_limited = false;
            }
            // A line waiting for its record in flight is woken by that record's result.
            q.redo_at.is_some() || (!q.queue.is_empty() && !q.in_flight)
        });
        self.busy_shards = busy;

        // Calls, as many as may be in flight.
        while self.requests.len() < self.concurrency.limit() {
            let Some((stream, batch)) = self.collector.next_batch(now, self.flushing) else {
                break;
            };
            let batch = self.drop_expired(batch, now);
            if !batch.is_empty() {
                self.send(stream, batch, now);
            }
        }
        if self.flushing && self.aggregator.is_empty() && self.collector.is_empty() {
            self.flushing = false;
        }

        if now >= self.next_tick {
            self.next_tick = now + TICK;
            self.tick(now);
        }
    }

    /// Kinesis records all of whose user records have expired are failed instead of sent.
    fn drop_expired(&mut self, batch: Vec<KinesisRecord>, now: Instant) -> Vec<KinesisRecord> {
        let mut keep = Vec::with_capacity(batch.len());
        for record in batch {
            let ttl = self.config.record_ttl;
            if record.user_records.iter().all(|p| now >= p.arrival + ttl) {
                self.line_done(&record);
                for p in record.user_records {
                    self.expire(p);
                }
            } else {
                keep.push(record);
            }
        }
        keep
    }

    fn send(&mut self, stream: StreamId, records: Vec<KinesisRecord>, now: Instant) {
        let mut records = records;
        seal_all(&mut records);
        // The data moves into the request: a failed record is rebuilt from its user records, and
        // a uniquely owned aggregate then reaches the SDK without a copy.
        let entries: Vec<PutEntry> = records
            .iter_mut()
            .map(|r| PutEntry {
                partition_key: r.partition_key.clone(),
                explicit_hash_key: r.explicit_hash_key.clone(),
                data: r.data.take(),
            })
            .collect();
        let api = self.api.clone();
        let timeout = self.config.request_timeout;
        let span = tracing::debug_span!("put_records", stream = %stream, records = entries.len());
        self.requests.spawn(tracing::Instrument::instrument(
            async move {
                let started = now;
                let call = CatchUnwind::new(api.put_records(&stream, entries));
                let result = match tokio::time::timeout(timeout, call).await {
                    Ok(Ok(result)) => result,
                    Ok(Err(panic)) => {
                        Err(CallError::Other(format!("PutRecords panicked: {panic}")))
                    }
                    Err(_) => Err(CallError::Timeout),
                };
                Completion {
                    records,
                    started,
                    duration: Instant::now().saturating_duration_since(started),
                    result,
                }
            },
            span,
        ));
    }

    fn next_wake(&mut self) -> Instant {
        let now = Instant::now();
        let mut wake = self.next_tick;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                wake = wake.min(t);
            }
        };
        consider(self.retries.first_key_value().map(|((at, _), _)| *at));
        consider(self.aggregator.next_deadline());
        if self.requests.len() < self.concurrency.limit() {
            consider(self.collector.next_deadline());
        }
        for key in &self.busy_shards {
            let Some(q) = self.shards.get_mut(key) else {
                continue;
            };
            if q.redo_at.is_some() {
                consider(q.redo_at);
            } else if let Some(front) = q.queue.front() {
                let size = front.size();
                consider(Some(now + q.limiter.wait(now, size)));
            }
        }
        wake
    }
}
