//! What the dispatcher does with the result of a PutRecords call: resolve stored records, sort
//! out aggregates that landed on an unexpected shard, and retry, expire or fail the rest.

use super::*;

impl Dispatcher {
    pub(super) fn on_completion(&mut self, c: Completion) {
        Counters::add(&self.counters.put_records_calls, 1);
        let now = Instant::now();
        let results = match c.result {
            Ok(results) if results.len() == c.records.len() => {
                self.concurrency.succeeded();
                let limit = self.concurrency.limit() as u64;
                Counters::set(&self.counters.concurrency_limit, limit);
                results
            }
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
            self.line_done(&record);
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
                            true,
                        );
                    }
                }
                EntryResult::Failed { code, message } => {
                    let class = classify_code(&code);
                    if code == "InternalFailure" {
                        self.congested(c.started, now);
                    }
                    kpl_metrics::error(&record.stream, record.predicted_shard.as_deref(), &code);
                    if class == Class::Throttled {
                        Counters::add(&self.counters.throttled, 1);
                        self.slow_down(&record, now);
                    }
                    let error = AttemptError { code, message };
                    let line = self.ordered_line(&record);
                    for p in record.user_records {
                        self.failed(p, class, &error, c.started, c.duration, now, line.as_ref());
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

    /// Resolves the user records of a stored Kinesis record, or, unless the shard it landed on
    /// owns them all (`all_owned`), re-sends every one of them: a Java KCL drops such an
    /// aggregate whole.
    pub(super) fn stored(
        &mut self,
        record: KinesisRecord,
        shard_id: &str,
        sequence_number: &str,
        started: Instant,
        duration: Duration,
        all_owned: bool,
    ) {
        let aggregated = record.aggregated();
        let stream = record.stream.clone();
        let now = started + duration;
        if let Some(first) = record.user_records.first() {
            kpl_metrics::record_done(
                &stream,
                first.failed_attempts() + 1,
                started
                    .saturating_duration_since(first.waiting_since())
                    .as_secs_f64()
                    * 1e3,
                record.user_records.len(),
            );
        }
        let line = if all_owned {
            None
        } else {
            self.ordered_line(&record)
        };
        let mut user_records = record.user_records;
        if !all_owned {
            for p in user_records.drain(..) {
                Counters::add(&self.counters.wrong_shard_resent, 1);
                let error = AttemptError {
                    code: "WrongShard".into(),
                    message: format!(
                        "the aggregate landed on {shard_id}, which does not own all of its records (a Java KCL would drop it whole); re-sending hash key {}",
                        p.hash_key
                    ),
                };
                let line = line.as_ref();
                self.failed(p, Class::Transient, &error, started, duration, now, line);
            }
            self.aggregator.recycle(user_records);
            return;
        }
        // One allocation per Kinesis record, shared by all of its user records' results.
        let at = Arc::new(StoredAt {
            shard_id: shard_id.into(),
            sequence_number: sequence_number.into(),
            duration,
            aggregated,
        });
        let mut bytes = 0usize;
        for p in &user_records {
            bytes += bytes_of(&p.record) as usize;
            p.reply.touch();
        }
        // Capacity first and counters next: whoever awaits a result may check them at once.
        let count = user_records.len();
        self.capacity.release(count, bytes);
        Counters::add(&self.counters.user_records_put, count as u64);
        for (sub, p) in user_records.drain(..).enumerate() {
            let delay = started.saturating_duration_since(p.waiting_since());
            let epoch = p.epoch;
            p.succeed(&at, sub as u64, delay);
            self.epochs.resolved(epoch);
        }
        // The buffer goes back to the aggregator for a new aggregate.
        self.aggregator.recycle(user_records);
    }

    /// An aggregate landed on an unexpected shard: refresh the map, then sort its records out.
    pub(super) fn wrong_shard(
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
            self.stored(record, &shard_id, &sequence_number, started, duration, true);
            return;
        }
        tracing::debug!(stream = %record.stream, predicted = ?record.predicted_shard, actual = %shard_id, "aggregate landed on an unexpected shard");
        self.line_parked(&record);
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

    pub(super) fn entry_of(&mut self, record: &KinesisRecord) -> Option<Arc<StreamEntry>> {
        self.entry(&record.stream)
    }

    pub(super) fn on_refreshed(&mut self, r: Refreshed) {
        end_refresh(&r.entry);
        if r.ok {
            Counters::add(&self.counters.shard_map_refreshes, 1);
            self.last_refresh.insert(r.entry.id.clone(), Instant::now());
        }
        let map = r.entry.map();
        if self.config.ordered && r.ok {
            self.reshard_lines(&r.entry.id, &map);
        }
        let Some(landed) = self.parked.remove(&r.entry.id) else {
            return;
        };
        let mut unknown = Vec::new();
        for l in landed {
            let owned = match map.range_of(&l.shard_id) {
                // The Java KCL drops an aggregate whole when any of its records lies outside the
                // shard's range (its issue 343), so unless the shard owns them all, none of them
                // counts as stored: all are sent again (this crate's consumer then sees the owned
                // ones twice).
                Some(range) => l
                    .record
                    .user_records
                    .iter()
                    .all(|p| range.contains(p.hash_key)),
                None if !l.listed_all && r.ok => {
                    unknown.push(Landed {
                        listed_all: true,
                        ..l
                    });
                    continue;
                }
                None => {
                    // Still unknown after a full listing (or listings keep failing): the record is
                    // stored, so report it as such rather than risk a duplicate.
                    tracing::warn!(shard = %l.shard_id, "aggregate landed on a shard no listing shows; accepting it");
                    true
                }
            };
            let line = self.ordered_line(&l.record);
            self.stored(
                l.record,
                &l.shard_id,
                &l.sequence_number,
                l.started,
                l.duration,
                owned,
            );
            if let Some(line) = line {
                self.line_key_done(line);
            }
        }
        if !unknown.is_empty() {
            self.parked.insert(r.entry.id.clone(), unknown);
            self.refresh(&r.entry, true);
        }
    }

    pub(super) fn call_failed(
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
        let server_error = matches!(e, CallError::Service { status: Some(s), .. } if *s >= 500);
        if error.outcome_unknown() || server_error {
            self.congested(started, now);
        }
        tracing::debug!(code = %error.code, message = %error.message, ?class, "PutRecords call failed");
        if error.code == "ResourceNotFoundException"
            && let Some(entry) = records.first().and_then(|r| self.entry_of(r))
        {
            // Deleted under us: later puts for it are refused at once.
            entry.mark_deleted();
        }
        for record in records {
            self.line_done(&record);
            kpl_metrics::error(&record.stream, None, &error.code);
            if class == Class::Throttled {
                Counters::add(&self.counters.throttled, 1);
                self.slow_down(&record, now);
            }
            let line = self.ordered_line(&record);
            for p in record.user_records {
                self.failed(p, class, &error, started, duration, now, line.as_ref());
            }
        }
    }

    /// One user record's attempt failed: give up, or schedule a retry (in ordered mode, at the
    /// front of its `line`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn failed(
        &mut self,
        mut p: Pending,
        class: Class,
        error: &AttemptError,
        started: Instant,
        duration: Duration,
        now: Instant,
        line: Option<&ShardKey>,
    ) {
        let delay = started.saturating_duration_since(p.waiting_since());
        let attempt = Attempt::new(delay, duration, Some(error.clone()));
        let (base, max) = (self.config.retry_base_delay, self.config.retry_max_delay);
        let retry = p.retry.get_or_insert_with(|| {
            Box::new(Retry {
                attempts: Vec::new(),
                backoff: Backoff::new(base, max),
                since: now,
            })
        });
        retry.attempts.push(attempt);
        retry.since = now;
        let expires = p.arrival + self.config.record_ttl;
        match class {
            Class::Fatal => {
                Counters::add(&self.counters.failed, 1);
                self.give_up(
                    p,
                    PutErrorKind::Rejected {
                        code: error.code.clone(),
                        message: error.message.clone(),
                    },
                );
            }
            Class::Throttled if self.config.fail_if_throttled => {
                Counters::add(&self.counters.failed, 1);
                self.give_up(
                    p,
                    PutErrorKind::Throttled {
                        code: error.code.clone(),
                        message: error.message.clone(),
                    },
                );
            }
            _ if now >= expires => self.expire(p),
            _ => {
                let wait = match &mut p.retry {
                    Some(retry) => retry.backoff.next_delay(&mut self.rng),
                    None => Duration::ZERO,
                };
                let at = (now + wait).min(expires);
                Counters::add(&self.counters.retries, 1);
                if let Some(line) = line {
                    self.redo(line.clone(), at, p);
                } else {
                    self.retry_seq += 1;
                    self.retries.insert((at, self.retry_seq), p);
                }
            }
        }
    }

    /// Resolves a record with an error: its capacity first, then its future, then its epoch.
    pub(super) fn give_up(&mut self, p: Pending, kind: PutErrorKind) {
        self.capacity.release(1, bytes_of(&p.record) as usize);
        let epoch = p.epoch;
        p.fail(kind);
        self.epochs.resolved(epoch);
    }

    pub(super) fn expire(&mut self, p: Pending) {
        Counters::add(&self.counters.expired, 1);
        Counters::add(&self.counters.failed, 1);
        kpl_metrics::expired(&p.record.stream);
        let last_error = p.last_error();
        if p.maybe_stored() {
            Counters::add(&self.counters.indeterminate, 1);
            self.give_up(p, PutErrorKind::Indeterminate { last_error });
        } else {
            self.give_up(p, PutErrorKind::Expired { last_error });
        }
    }

    /// The endpoint is slow or failing: fewer calls in flight (see `pipeline::concurrency`).
    fn congested(&mut self, started: Instant, now: Instant) {
        if self.concurrency.congested(started, now) {
            let limit = self.concurrency.limit();
            Counters::set(&self.counters.concurrency_limit, limit as u64);
            tracing::debug!(
                limit,
                "endpoint slow or failing: fewer PutRecords calls in flight"
            );
        }
    }

    pub(super) fn slow_down(&mut self, record: &KinesisRecord, now: Instant) {
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
}
