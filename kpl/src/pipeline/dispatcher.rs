//! The background task that owns the pipeline: it takes records from the handle, drives them
//! through aggregator → limiter → collector, starts PutRecords calls, and turns their results
//! into resolved futures, retries, map refreshes and re-sends.

use std::collections::{BTreeMap, VecDeque};

use foldhash::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::aggregator::Aggregator;
use super::collector::Collector;
use super::limiter::ShardLimiter;
use super::pending::{KinesisRecord, Pending, StreamId};
use super::retry::{Backoff, Class, classify_call, classify_code};
use super::shard_map::ShardMap;
use super::streams::{StreamEntry, Streams, begin_refresh, end_refresh};
use crate::config::ProducerConfig;
use crate::error::PutErrorKind;
use crate::kinesis::{CallError, EntryResult, KinesisApi, PutEntry};
use crate::record::{Attempt, AttemptError};
use crate::stats::{Counters, kpl_metrics};

/// What the handle sends the dispatcher.
#[derive(Debug)]
pub(crate) enum Command {
    Put(Box<Pending>),
    Flush,
    Shutdown,
}

/// Most commands taken per loop turn before the pipeline is driven (also the channel's capacity:
/// a sender blocked on a full channel is woken once per batch).
pub(crate) const COMMAND_BATCH: usize = 4096;
/// How often scheduled map refreshes and published shard rates are checked.
const TICK: Duration = Duration::from_secs(1);

type ShardKey = (StreamId, Arc<str>);

#[derive(Debug)]
struct ShardQueue {
    limiter: ShardLimiter,
    queue: VecDeque<KinesisRecord>,
}

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
    commands: mpsc::Receiver<Command>,
    /// User records received per stream since the metric was last emitted.
    received: HashMap<StreamId, u64>,
    aggregator: Aggregator,
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
}

impl Dispatcher {
    pub(crate) fn new(
        config: Arc<ProducerConfig>,
        api: Arc<dyn KinesisApi>,
        streams: Arc<Streams>,
        counters: Arc<Counters>,
        commands: mpsc::Receiver<Command>,
    ) -> Self {
        Dispatcher {
            aggregator: Aggregator::new(
                config.aggregation_enabled,
                config.aggregation_max_size,
                config.aggregation_max_count,
                config.record_max_buffered_time,
            ),
            collector: Collector::new(config.collection_max_count, config.collection_max_size),
            config,
            api,
            streams,
            counters,
            commands,
            received: HashMap::default(),
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
        }
    }

    pub(crate) async fn run(mut self) {
        // Commands are taken in bulk: one wake-up of a blocked sender per batch, not per record.
        let mut inbox = Vec::with_capacity(COMMAND_BATCH);
        loop {
            let wake = self.next_wake();
            tokio::select! {
                Some(done) = self.requests.join_next(), if !self.requests.is_empty() => {
                    match done {
                        Ok(completion) => self.on_completion(completion),
                        Err(e) => tracing::error!(error = %e, "PutRecords task failed"),
                    }
                }
                Some(done) = self.refreshes.join_next(), if !self.refreshes.is_empty() => {
                    if let Ok(refreshed) = done {
                        self.on_refreshed(refreshed);
                    }
                }
                received = self.commands.recv_many(&mut inbox, COMMAND_BATCH), if !self.shutting_down => {
                    if received == 0 {
                        // Every handle is gone: drain what was accepted, then stop.
                        self.shutting_down = true;
                    }
                    for command in inbox.drain(..) {
                        self.on_command(command);
                    }
                    for (stream, n) in self.received.drain() {
                        kpl_metrics::received(&stream, n);
                    }
                }
                () = tokio::time::sleep_until(wake) => {}
            }
            let now = Instant::now();
            self.drive(now);
            if self.shutting_down && self.idle() {
                break;
            }
        }
        // Anything that raced in after shutdown began gets its record back.
        self.commands.close();
        while let Ok(command) = self.commands.try_recv() {
            if let Command::Put(p) = command {
                p.fail(PutErrorKind::Stopped);
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

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Put(p) => {
                *self.received.entry(p.record.stream.clone()).or_insert(0) += 1;
                self.route(*p);
            }
            Command::Flush => self.flushing = true,
            Command::Shutdown => {
                self.shutting_down = true;
                self.flushing = true;
            }
        }
    }

    /// Predicts the record's shard and hands it to the aggregator.
    fn route(&mut self, p: Pending) {
        let shard = p.entry.map().predict(p.hash_key).cloned();
        if shard.is_none() {
            let entry = p.entry.clone();
            self.refresh(&entry, false);
        }
        let mut closed = Vec::new();
        self.aggregator.add(p, shard, &mut closed);
        self.enqueue(closed);
    }

    fn enqueue(&mut self, records: Vec<KinesisRecord>) {
        for record in records {
            match &record.predicted_shard {
                Some(shard) => {
                    let key = (record.stream.clone(), shard.clone());
                    let percent = self.config.rate_limit_percent;
                    self.shards
                        .entry(key.clone())
                        .or_insert_with(|| ShardQueue {
                            limiter: ShardLimiter::new(percent, Instant::now()),
                            queue: VecDeque::new(),
                        })
                        .queue
                        .push_back(record);
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
            if now >= p.expires {
                self.expire(p);
            } else {
                self.route(p);
            }
        }

        let mut closed = Vec::new();
        if self.flushing {
            self.aggregator.close_all(&mut closed);
        } else {
            self.aggregator.close_due(now, &mut closed);
        }
        self.enqueue(closed);

        // Limiters release what their buckets allow.
        let busy: Vec<ShardKey> = self.busy_shards.iter().cloned().collect();
        for key in busy {
            let Some(q) = self.shards.get_mut(&key) else {
                continue;
            };
            while let Some(front) = q.queue.front() {
                if !q.limiter.try_acquire(now, front.size()) {
                    break;
                }
                if let Some(record) = q.queue.pop_front() {
                    self.collector.push(record);
                }
            }
            if q.queue.is_empty() {
                self.busy_shards.remove(&key);
            }
        }

        // Calls, as many as may be in flight.
        while self.requests.len() < self.config.max_concurrent_requests {
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
            if record.user_records.iter().all(|p| now >= p.expires) {
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
        let entries: Vec<PutEntry> = records
            .iter()
            .map(|r| PutEntry {
                partition_key: r.partition_key.clone(),
                explicit_hash_key: r.explicit_hash_key.clone(),
                data: r.data.clone(),
            })
            .collect();
        let api = self.api.clone();
        let timeout = self.config.request_timeout;
        let span = tracing::debug_span!("put_records", stream = %stream, records = entries.len());
        self.requests.spawn(tracing::Instrument::instrument(
            async move {
                let started = now;
                let result =
                    match tokio::time::timeout(timeout, api.put_records(&stream, entries)).await {
                        Ok(result) => result,
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

    fn on_completion(&mut self, c: Completion) {
        Counters::add(&self.counters.put_records_calls, 1);
        let now = Instant::now();
        let results = match c.result {
            Ok(results) if results.len() == c.records.len() => results,
            Ok(results) => {
                let e = CallError::Other(format!(
                    "PutRecords answered {} results for {} records",
                    results.len(),
                    c.records.len()
                ));
                return self.call_failed(c.records, &e, c.started, c.duration, now);
            }
            Err(e) => return self.call_failed(c.records, &e, c.started, c.duration, now),
        };
        let stream = c.records.first().map(|r| r.stream.clone());
        let (mut user_put, mut user_bytes, mut kinesis_put, mut kinesis_bytes) =
            (0u64, 0u64, 0u64, 0u64);
        let user_in_call: usize = c.records.iter().map(|r| r.user_records.len()).sum();
        let kinesis_in_call = c.records.len();
        for (record, result) in c.records.into_iter().zip(results) {
            match result {
                EntryResult::Stored {
                    shard_id,
                    sequence_number,
                } => {
                    kinesis_put += 1;
                    Counters::add(&self.counters.kinesis_records_put, 1);
                    kinesis_bytes += record.size() as u64;
                    user_put += record.user_records.len() as u64;
                    user_bytes += record
                        .user_records
                        .iter()
                        .map(|p| p.record.data.len() as u64)
                        .sum::<u64>();
                    let predicted_right =
                        record.predicted_shard.as_deref() == Some(shard_id.as_str());
                    if !predicted_right {
                        self.wrong_shard(record, shard_id, sequence_number, c.started, c.duration);
                    } else {
                        self.stored(
                            record,
                            &shard_id,
                            &sequence_number,
                            c.started,
                            c.duration,
                            |_| true,
                        );
                    }
                }
                EntryResult::Failed { code, message } => {
                    let class = classify_code(&code);
                    kpl_metrics::error(&record.stream, &code);
                    if class == Class::Throttled {
                        Counters::add(&self.counters.throttled, 1);
                        self.slow_down(&record, now);
                    }
                    let error = AttemptError { code, message };
                    for p in record.user_records {
                        self.failed(p, class, &error, c.started, c.duration, now);
                    }
                }
            }
        }
        if let Some(stream) = stream {
            kpl_metrics::call(&kpl_metrics::CallSummary {
                stream: &stream,
                user_records_put: user_put,
                user_bytes_put: user_bytes,
                kinesis_records_put: kinesis_put,
                kinesis_bytes_put: kinesis_bytes,
                kinesis_records_in_call: kinesis_in_call as u64,
                user_records_in_call: user_in_call as u64,
                request_time_ms: c.duration.as_secs_f64() * 1e3,
            });
        }
    }

    /// Resolves the user records of a stored Kinesis record that `owned` accepts; the others are
    /// re-sent (they landed on a shard that does not own their hash key).
    fn stored(
        &mut self,
        record: KinesisRecord,
        shard_id: &str,
        sequence_number: &str,
        started: Instant,
        duration: Duration,
        owned: impl Fn(&Pending) -> bool,
    ) {
        let aggregated = record.aggregated();
        // One allocation per Kinesis record, shared by all of its user records' results.
        let (shard, sequence): (Arc<str>, Arc<str>) =
            (Arc::from(shard_id), Arc::from(sequence_number));
        let per_kinesis_record = record.user_records.len();
        let stream = record.stream.clone();
        let now = started + duration;
        if let Some(first) = record.user_records.first() {
            kpl_metrics::record_done(
                &stream,
                first.attempts.len(),
                started
                    .saturating_duration_since(first.waiting_since)
                    .as_secs_f64()
                    * 1e3,
                per_kinesis_record,
            );
        }
        for (sub, mut p) in record.user_records.into_iter().enumerate() {
            let delay = started.saturating_duration_since(p.waiting_since);
            if owned(&p) {
                p.attempts.push(Attempt::new(delay, duration, None));
                // Count before resolving: whoever awaits the result may read stats at once.
                Counters::add(&self.counters.user_records_put, 1);
                p.succeed(&shard, &sequence, sub as u64, aggregated);
            } else {
                Counters::add(&self.counters.wrong_shard_resent, 1);
                let error = AttemptError {
                    code: "WrongShard".into(),
                    message: format!(
                        "the aggregate landed on {shard_id}, which does not own hash key {}; re-sending",
                        p.hash_key
                    ),
                };
                self.failed(p, Class::Transient, &error, started, duration, now);
            }
        }
    }

    /// An aggregate landed on an unexpected shard: refresh the map, then sort its records out.
    fn wrong_shard(
        &mut self,
        record: KinesisRecord,
        shard_id: String,
        sequence_number: String,
        started: Instant,
        duration: Duration,
    ) {
        Counters::add(&self.counters.wrong_shard, 1);
        let entry = self.entry_of(&record);
        if !record.aggregated() {
            // A record sent alone was routed by Kinesis itself from its own keys: it is right.
            if let Some(entry) = &entry {
                self.refresh(entry, false);
            }
            self.stored(
                record,
                &shard_id,
                &sequence_number,
                started,
                duration,
                |_| true,
            );
            return;
        }
        tracing::debug!(stream = %record.stream, predicted = ?record.predicted_shard, actual = %shard_id, "aggregate landed on an unexpected shard");
        let stream = record.stream.clone();
        self.parked.entry(stream).or_default().push(Landed {
            record,
            shard_id,
            sequence_number,
            started,
            duration,
            listed_all: false,
        });
        if let Some(entry) = entry {
            self.refresh(&entry, false);
        }
    }

    fn entry_of(&self, record: &KinesisRecord) -> Option<Arc<StreamEntry>> {
        record.user_records.first().map(|p| p.entry.clone())
    }

    fn on_refreshed(&mut self, r: Refreshed) {
        end_refresh(&r.entry);
        if r.ok {
            Counters::add(&self.counters.shard_map_refreshes, 1);
            self.last_refresh.insert(r.entry.id.clone(), Instant::now());
        }
        let Some(landed) = self.parked.remove(&r.entry.id) else {
            return;
        };
        let map = r.entry.map();
        let mut unknown = Vec::new();
        for l in landed {
            match map.range_of(&l.shard_id) {
                Some(range) => self.stored(
                    l.record,
                    &l.shard_id,
                    &l.sequence_number,
                    l.started,
                    l.duration,
                    |p| range.contains(p.hash_key),
                ),
                None if !l.listed_all && r.ok => unknown.push(Landed {
                    listed_all: true,
                    ..l
                }),
                None => {
                    // Still unknown after a full listing (or listings keep failing): the record is
                    // stored, so report it as such rather than risk a duplicate.
                    tracing::warn!(shard = %l.shard_id, "aggregate landed on a shard no listing shows; accepting it");
                    self.stored(
                        l.record,
                        &l.shard_id,
                        &l.sequence_number,
                        l.started,
                        l.duration,
                        |_| true,
                    );
                }
            }
        }
        if !unknown.is_empty() {
            self.parked.insert(r.entry.id.clone(), unknown);
            self.refresh(&r.entry, true);
        }
    }

    fn call_failed(
        &mut self,
        records: Vec<KinesisRecord>,
        e: &CallError,
        started: Instant,
        duration: Duration,
        now: Instant,
    ) {
        let class = classify_call(e);
        let error = AttemptError {
            code: e.code().to_owned(),
            message: e.message(),
        };
        tracing::debug!(code = %error.code, message = %error.message, ?class, "PutRecords call failed");
        for record in records {
            kpl_metrics::error(&record.stream, &error.code);
            if class == Class::Throttled {
                Counters::add(&self.counters.throttled, 1);
                self.slow_down(&record, now);
            }
            for p in record.user_records {
                self.failed(p, class, &error, started, duration, now);
            }
        }
    }

    /// One user record's attempt failed: give up, or schedule a retry.
    fn failed(
        &mut self,
        mut p: Pending,
        class: Class,
        error: &AttemptError,
        started: Instant,
        duration: Duration,
        now: Instant,
    ) {
        let delay = started.saturating_duration_since(p.waiting_since);
        p.attempts
            .push(Attempt::new(delay, duration, Some(error.clone())));
        p.waiting_since = now;
        match class {
            Class::Fatal => {
                Counters::add(&self.counters.failed, 1);
                p.fail(PutErrorKind::Rejected {
                    code: error.code.clone(),
                    message: error.message.clone(),
                });
            }
            Class::Throttled if self.config.fail_if_throttled => {
                Counters::add(&self.counters.failed, 1);
                p.fail(PutErrorKind::Throttled {
                    code: error.code.clone(),
                    message: error.message.clone(),
                });
            }
            _ if now >= p.expires => self.expire(p),
            _ => {
                let (base, max) = (self.config.retry_base_delay, self.config.retry_max_delay);
                let wait = p
                    .backoff
                    .get_or_insert_with(|| Box::new(Backoff::new(base, max)))
                    .next_delay(&mut self.rng);
                let at = (now + wait).min(p.expires);
                Counters::add(&self.counters.retries, 1);
                self.retry_seq += 1;
                self.retries.insert((at, self.retry_seq), p);
            }
        }
    }

    fn expire(&mut self, p: Pending) {
        Counters::add(&self.counters.expired, 1);
        Counters::add(&self.counters.failed, 1);
        kpl_metrics::expired(&p.record.stream);
        let last_error = p.last_error();
        p.fail(PutErrorKind::Expired { last_error });
    }

    fn slow_down(&mut self, record: &KinesisRecord, now: Instant) {
        let Some(shard) = &record.predicted_shard else {
            return;
        };
        if let Some(q) = self.shards.get_mut(&(record.stream.clone(), shard.clone())) {
            q.limiter.throttled(now);
            let rate = q.limiter.rate_percent(self.config.rate_limit_percent);
            let mut rates = self
                .counters
                .shard_rates
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            rates.insert(format!("{}/{}", record.stream, shard), rate);
        }
    }

    /// Scheduled work: periodic map refreshes, and publishing the rates of slowed shards.
    fn tick(&mut self, now: Instant) {
        for entry in self.streams.all() {
            let last = *self.last_refresh.entry(entry.id.clone()).or_insert(now);
            if now.saturating_duration_since(last) >= self.config.shard_map_refresh_interval {
                self.refresh(&entry, false);
            }
        }
        let mut rates = self
            .counters
            .shard_rates
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let percent = self.config.rate_limit_percent;
        for ((stream, shard), q) in &mut self.shards {
            let name = format!("{stream}/{shard}");
            if let Some(rate) = rates.get_mut(&name) {
                q.limiter.advance(now);
                let current = q.limiter.rate_percent(percent);
                if current >= f64::from(percent) {
                    rates.remove(&name);
                } else {
                    *rate = current;
                }
            }
        }
    }

    /// Starts a map refresh for the stream unless one is running; with `all`, closed shards are
    /// listed too (to learn the range of a shard that is no longer open).
    fn refresh(&mut self, entry: &Arc<StreamEntry>, all: bool) {
        if self.shutting_down && self.parked.is_empty() {
            return;
        }
        if !begin_refresh(entry) {
            return;
        }
        let api = self.api.clone();
        let entry = entry.clone();
        self.refreshes.spawn(async move {
            let mut wait = Duration::from_secs(1);
            for _ in 0..5 {
                match list(&*api, &entry, all).await {
                    Ok(map) => {
                        entry.set_map(map);
                        return Refreshed { entry, ok: true };
                    }
                    Err(e) => {
                        tracing::warn!(stream = %entry.id, code = e.code(), message = %e.message(), "shard map refresh failed");
                        tokio::time::sleep(wait).await;
                        wait = (wait.mul_f64(1.5)).min(Duration::from_secs(30));
                    }
                }
            }
            Refreshed { entry, ok: false }
        });
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
        if self.requests.len() < self.config.max_concurrent_requests {
            consider(self.collector.next_deadline());
        }
        for key in &self.busy_shards {
            if let Some(q) = self.shards.get_mut(key)
                && let Some(front) = q.queue.front()
            {
                let size = front.size();
                consider(Some(now + q.limiter.wait(now, size)));
            }
        }
        wake
    }
}

async fn list(api: &dyn KinesisApi, entry: &StreamEntry, all: bool) -> Result<ShardMap, CallError> {
    let open = api.list_shards(&entry.id, true).await?;
    let previous = entry.map();
    let mut map = ShardMap::new(open, Some(&previous));
    if all {
        map.learn(&api.list_shards(&entry.id, false).await?);
    }
    Ok(map)
}
