//! Counters behind [`Producer::stats`](crate::Producer::stats), and the `metrics` facade calls
//! with the Java KPL's metric names, labelled by stream.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the producer's state.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct ProducerStats {
    /// User records accepted and not yet resolved.
    pub outstanding_records: u64,
    /// Bytes of those records (data + keys).
    pub outstanding_bytes: u64,
    /// User records accepted by `put`/`try_put`.
    pub user_records_received: u64,
    /// User records stored.
    pub user_records_put: u64,
    /// Kinesis records stored (aggregates count once).
    pub kinesis_records_put: u64,
    /// PutRecords calls completed (successfully or not).
    pub put_records_calls: u64,
    /// User-record retries scheduled.
    pub retries: u64,
    /// User records failed as expired.
    pub expired: u64,
    /// Of those, records whose outcome is unknown (some attempt timed out or lost its
    /// connection: Kinesis may have stored them), failed as `Indeterminate`.
    pub indeterminate: u64,
    /// PutRecords calls allowed in flight now: `max_concurrent_requests`, or fewer while the
    /// endpoint is slow or failing (halved per round of timeouts and 5xx, regained one call per
    /// limit's worth of successful calls).
    pub concurrency_limit: u64,
    /// User records failed for any reason (expired included).
    pub failed: u64,
    /// Kinesis records or calls that came back throttled.
    pub throttled: u64,
    /// Shard map refreshes completed.
    pub shard_map_refreshes: u64,
    /// Aggregates that Kinesis stored on a shard other than the predicted one.
    pub wrong_shard: u64,
    /// User records re-sent because their aggregate landed on a shard that does not own all of
    /// its records (each one of them: a Java KCL would drop the whole aggregate).
    pub wrong_shard_resent: u64,
    /// The rate in force per shard (`stream/shard` → percent of the shard limit) for shards
    /// slowed by throttling; shards at the configured rate are not listed.
    pub throttled_shard_rates: BTreeMap<String, f64>,
}

/// A counter on a cache line of its own.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct OwnLine(pub(crate) AtomicU64);

#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Written by callers' threads on every `put`, the rest by the dispatcher: apart, so the
    /// two do not take turns owning one cache line.
    pub(crate) user_records_received: OwnLine,
    pub(crate) user_records_put: AtomicU64,
    pub(crate) kinesis_records_put: AtomicU64,
    pub(crate) put_records_calls: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) expired: AtomicU64,
    pub(crate) indeterminate: AtomicU64,
    pub(crate) concurrency_limit: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) throttled: AtomicU64,
    pub(crate) shard_map_refreshes: AtomicU64,
    pub(crate) wrong_shard: AtomicU64,
    pub(crate) wrong_shard_resent: AtomicU64,
    pub(crate) shard_rates: Mutex<BTreeMap<String, f64>>,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn set(gauge: &AtomicU64, value: u64) {
        gauge.store(value, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(
        &self,
        outstanding_records: u64,
        outstanding_bytes: u64,
    ) -> ProducerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ProducerStats {
            outstanding_records,
            outstanding_bytes,
            user_records_received: get(&self.user_records_received.0),
            user_records_put: get(&self.user_records_put),
            kinesis_records_put: get(&self.kinesis_records_put),
            put_records_calls: get(&self.put_records_calls),
            retries: get(&self.retries),
            expired: get(&self.expired),
            indeterminate: get(&self.indeterminate),
            concurrency_limit: get(&self.concurrency_limit),
            failed: get(&self.failed),
            throttled: get(&self.throttled),
            shard_map_refreshes: get(&self.shard_map_refreshes),
            wrong_shard: get(&self.wrong_shard),
            wrong_shard_resent: get(&self.wrong_shard_resent),
            throttled_shard_rates: self
                .shard_rates
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

/// `metrics` facade calls, named as the Java KPL names its metrics.
pub(crate) mod kpl_metrics {
    use metrics::{
        Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
    };

    /// Units and descriptions of every metric, for recorders that show them (once per process).
    pub(crate) fn describe() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            let c = |name: &'static str, unit: Unit, what: &'static str| {
                describe_counter!(name, unit, what);
            };
            c(
                "UserRecordsReceived",
                Unit::Count,
                "User records the producer took in",
            );
            c(
                "UserRecordsPut",
                Unit::Count,
                "User records stored by Kinesis",
            );
            c(
                "UserRecordsDataPut",
                Unit::Bytes,
                "Data bytes of the user records stored",
            );
            c(
                "KinesisRecordsPut",
                Unit::Count,
                "Kinesis records (aggregates or single records) stored",
            );
            c(
                "KinesisRecordsDataPut",
                Unit::Bytes,
                "Bytes of the Kinesis records stored",
            );
            c(
                "ErrorsByCode",
                Unit::Count,
                "Failed attempts, by error code",
            );
            c("AllErrors", Unit::Count, "Failed attempts");
            c(
                "UserRecordExpired",
                Unit::Count,
                "User records failed at record_ttl (Expired or Indeterminate)",
            );
            let h = |name: &'static str, unit: Unit, what: &'static str| {
                describe_histogram!(name, unit, what);
            };
            h(
                "KinesisRecordsPerPutRecordsRequest",
                Unit::Count,
                "Kinesis records per PutRecords call",
            );
            h(
                "UserRecordsPerPutRecordsRequest",
                Unit::Count,
                "User records per PutRecords call",
            );
            h(
                "RequestTime",
                Unit::Milliseconds,
                "Duration of a PutRecords call",
            );
            h(
                "RetriesPerRecord",
                Unit::Count,
                "Attempts before a Kinesis record was stored",
            );
            h(
                "BufferingTime",
                Unit::Milliseconds,
                "Time from put (or the last attempt) to the call that stored it",
            );
            h(
                "UserRecordsPerKinesisRecord",
                Unit::Count,
                "User records per stored Kinesis record",
            );
            describe_gauge!(
                "UserRecordsPending",
                Unit::Count,
                "User records accepted and not yet resolved (all streams)"
            );
            describe_gauge!(
                "UserRecordsPendingBytes",
                Unit::Bytes,
                "Bytes of the user records accepted and not yet resolved"
            );
        });
    }

    /// The producer's backlog, set once a second.
    pub(crate) fn pending(records: usize, bytes: usize) {
        gauge!("UserRecordsPending").set(records as f64);
        gauge!("UserRecordsPendingBytes").set(bytes as f64);
    }

    pub(crate) fn received(stream: &str, n: u64) {
        counter!("UserRecordsReceived", "stream" => stream.to_owned()).increment(n);
    }

    pub(crate) struct CallSummary<'a> {
        pub(crate) stream: &'a str,
        pub(crate) user_records_put: u64,
        pub(crate) user_bytes_put: u64,
        pub(crate) kinesis_records_put: u64,
        pub(crate) kinesis_bytes_put: u64,
        pub(crate) kinesis_records_in_call: u64,
        pub(crate) user_records_in_call: u64,
        pub(crate) request_time_ms: f64,
    }

    pub(crate) fn call(s: &CallSummary<'_>) {
        let stream = s.stream.to_owned();
        counter!("UserRecordsPut", "stream" => stream.clone()).increment(s.user_records_put);
        counter!("UserRecordsDataPut", "stream" => stream.clone()).increment(s.user_bytes_put);
        counter!("KinesisRecordsPut", "stream" => stream.clone()).increment(s.kinesis_records_put);
        counter!("KinesisRecordsDataPut", "stream" => stream.clone())
            .increment(s.kinesis_bytes_put);
        histogram!("KinesisRecordsPerPutRecordsRequest", "stream" => stream.clone())
            .record(s.kinesis_records_in_call as f64);
        histogram!("UserRecordsPerPutRecordsRequest", "stream" => stream.clone())
            .record(s.user_records_in_call as f64);
        histogram!("RequestTime", "stream" => stream).record(s.request_time_ms);
    }

    /// A failed attempt; `shard` is the predicted shard of a record refused on its own (a
    /// whole call's failure has none).
    pub(crate) fn error(stream: &str, shard: Option<&str>, code: &str) {
        let mut labels = vec![
            metrics::Label::new("stream", stream.to_owned()),
            metrics::Label::new("code", code.to_owned()),
        ];
        if let Some(shard) = shard {
            labels.push(metrics::Label::new("shard", shard.to_owned()));
        }
        counter!("ErrorsByCode", labels).increment(1);
        counter!("AllErrors", "stream" => stream.to_owned()).increment(1);
    }

    /// The rate in force on a shard slowed by throttling, in percent of its limits.
    pub(crate) fn shard_rate(stream: &str, shard: &str, percent: f64) {
        gauge!("ShardRateLimitPercent", "stream" => stream.to_owned(), "shard" => shard.to_owned())
            .set(percent);
    }

    pub(crate) fn expired(stream: &str) {
        counter!("UserRecordExpired", "stream" => stream.to_owned()).increment(1);
    }

    pub(crate) fn record_done(
        stream: &str,
        retries: usize,
        buffering_ms: f64,
        per_kinesis_record: usize,
    ) {
        histogram!("RetriesPerRecord", "stream" => stream.to_owned()).record(retries as f64);
        histogram!("BufferingTime", "stream" => stream.to_owned()).record(buffering_ms);
        histogram!("UserRecordsPerKinesisRecord", "stream" => stream.to_owned())
            .record(per_kinesis_record as f64);
    }
}
