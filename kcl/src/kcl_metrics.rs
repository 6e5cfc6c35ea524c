//! What the worker reports through the [`metrics`] facade (install any recorder, e.g. a
//! Prometheus exporter, to collect them; without one they cost next to nothing). Names follow the
//! Java KCL's where it has one. Labels: `stream`, and `shard` for per-shard series.
//!
//! | name | kind | unit | what |
//! |---|---|---|---|
//! | `MillisBehindLatest` | gauge | ms | how far the shard's last batch was behind the tip |
//! | `RecordsProcessed` | counter | records | user records handed to processors |
//! | `DataBytesProcessed` | counter | bytes | their data bytes |
//! | `ProcessTask.Time` | histogram | ms | time in `process_records` per batch |
//! | `GetRecords.Time` | histogram | ms | GetRecords latency, answered or failed |
//! | `GetRecords.Throttled` | counter | calls | GetRecords calls refused as throttled |
//! | `GetRecords.Errors` | counter | calls | other failed GetRecords calls |
//! | `Checkpoint.Time` | histogram | ms | checkpoint writes to the lease table |
//! | `Checkpoint.Failures` | counter | calls | checkpoints refused (lease lost) or failed |
//! | `CurrentLeases` | gauge | leases | leases this worker holds |
//! | `TakenLeases` | counter | leases | leases taken (stolen ones included) |
//! | `StolenLeases` | counter | leases | leases taken from another live worker |
//! | `LostLeases` | counter | leases | leases lost to another worker or given up unrenewed |
//! | `HandedOffLeases` | counter | leases | leases this worker handed to another (graceful hand-off) |
//! | `HandOff.Time` | histogram | ms | from asking for a lease to holding it (the new owner's wait) |

use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};

/// Describes every metric (units and help texts) once per process.
pub(crate) fn describe() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        describe_counter!(
            "HandedOffLeases",
            Unit::Count,
            "Leases this worker handed to another worker that asked for them (graceful hand-off)"
        );
        describe_histogram!(
            "HandOff.Time",
            Unit::Milliseconds,
            "From asking another worker for a lease to holding it"
        );
        describe_gauge!(
            "MillisBehindLatest",
            Unit::Milliseconds,
            "How far the shard's last batch was behind the tip of the shard"
        );
        describe_counter!(
            "RecordsProcessed",
            Unit::Count,
            "User records handed to record processors"
        );
        describe_counter!(
            "DataBytesProcessed",
            Unit::Bytes,
            "Data bytes of the user records handed to record processors"
        );
        describe_histogram!(
            "ProcessTask.Time",
            Unit::Milliseconds,
            "Time the record processor took per batch"
        );
        describe_histogram!(
            "GetRecords.Time",
            Unit::Milliseconds,
            "GetRecords latency, answered or failed"
        );
        describe_counter!(
            "GetRecords.Throttled",
            Unit::Count,
            "GetRecords calls refused as throttled"
        );
        describe_counter!(
            "GetRecords.Errors",
            Unit::Count,
            "GetRecords calls failed other than by throttling"
        );
        describe_histogram!(
            "Checkpoint.Time",
            Unit::Milliseconds,
            "Checkpoint writes to the lease table"
        );
        describe_counter!(
            "Checkpoint.Failures",
            Unit::Count,
            "Checkpoints refused (lease lost) or failed"
        );
        describe_gauge!("CurrentLeases", Unit::Count, "Leases this worker holds");
        describe_counter!(
            "TakenLeases",
            Unit::Count,
            "Leases taken, stolen ones included"
        );
        describe_counter!(
            "StolenLeases",
            Unit::Count,
            "Leases taken from another live worker"
        );
        describe_counter!(
            "LostLeases",
            Unit::Count,
            "Leases lost to another worker, or given up when not renewed in time"
        );
        describe_counter!(
            "SubscribeToShard.Calls",
            Unit::Count,
            "Enhanced fan-out subscriptions started (each lasts up to five minutes)"
        );
        describe_counter!(
            "SubscribeToShard.Failures",
            Unit::Count,
            "Subscriptions refused or broken, by kind: in_use (another subscription to the shard took over or is still open), throttled, transient, fatal"
        );
        describe_counter!(
            "ProcessorCall.Slow",
            Unit::Count,
            "Warnings that a processor call has not returned (see slow_processor_call_warning)"
        );
    });
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One GetRecords call's latency and, if it failed, whether by throttling.
pub(crate) fn get_records(stream: &str, shard: &str, took: Duration, failed: Option<bool>) {
    let labels = [("stream", stream.to_owned()), ("shard", shard.to_owned())];
    histogram!("GetRecords.Time", &labels).record(ms(took));
    match failed {
        Some(true) => counter!("GetRecords.Throttled", &labels).increment(1),
        Some(false) => counter!("GetRecords.Errors", &labels).increment(1),
        None => {}
    }
}

/// A batch handed to a processor.
pub(crate) fn processed(
    stream: &str,
    shard: &str,
    records: usize,
    bytes: usize,
    millis_behind_latest: Option<i64>,
    took: Duration,
) {
    let labels = [("stream", stream.to_owned()), ("shard", shard.to_owned())];
    counter!("RecordsProcessed", &labels).increment(records as u64);
    counter!("DataBytesProcessed", &labels).increment(bytes as u64);
    histogram!("ProcessTask.Time", &labels).record(ms(took));
    if let Some(behind) = millis_behind_latest {
        gauge!("MillisBehindLatest", &labels).set(behind as f64);
    }
}

/// A checkpoint write.
pub(crate) fn checkpoint(shard: &str, took: Duration, ok: bool) {
    let labels = [("shard", shard.to_owned())];
    histogram!("Checkpoint.Time", &labels).record(ms(took));
    if !ok {
        counter!("Checkpoint.Failures", &labels).increment(1);
    }
}

/// Leases held now.
pub(crate) fn current_leases(held: usize) {
    gauge!("CurrentLeases").set(held as f64);
}

/// A lease taken.
pub(crate) fn taken(stolen: bool) {
    counter!("TakenLeases").increment(1);
    if stolen {
        counter!("StolenLeases").increment(1);
    }
}

/// A lease lost.
pub(crate) fn lost() {
    counter!("LostLeases").increment(1);
}

/// A lease this worker released to the worker that asked for it.
pub(crate) fn handed_off() {
    counter!("HandedOffLeases").increment(1);
}

/// A lease asked for and now held, after `waited`.
pub(crate) fn hand_off_wait(waited: Duration) {
    histogram!("HandOff.Time").record(ms(waited));
}

/// A processor call on `shard` still running after the warning time (or a doubling of it).
pub(crate) fn slow_call(stream: &str, shard: &str, call: &'static str) {
    let labels = [
        ("stream", stream.to_owned()),
        ("shard", shard.to_owned()),
        ("call", call.to_owned()),
    ];
    counter!("ProcessorCall.Slow", &labels).increment(1);
}

/// An enhanced fan-out subscription to `shard` started.
pub(crate) fn subscribed(stream: &str, shard: &str) {
    let labels = [("stream", stream.to_owned()), ("shard", shard.to_owned())];
    counter!("SubscribeToShard.Calls", &labels).increment(1);
}

/// A subscription to `shard` refused or broken; `kind` is in_use, throttled, transient or fatal.
pub(crate) fn subscription_failed(stream: &str, shard: &str, kind: &'static str) {
    let labels = [
        ("stream", stream.to_owned()),
        ("shard", shard.to_owned()),
        ("kind", kind.to_owned()),
    ];
    counter!("SubscribeToShard.Failures", &labels).increment(1);
}
