//! Worker settings. Every setter documents its default; defaults follow the Java KCL.

use std::time::{Duration, SystemTime};

use kinesis_retry::BackoffConfig;

/// Where a shard without a checkpoint starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitialPosition {
    /// The newest records: only what is written after the worker starts (KCL's default).
    Latest,
    /// The oldest records still retained, oldest shards (parents) first.
    TrimHorizon,
    /// Records from this time on.
    AtTimestamp(SystemTime),
}

/// Worker settings.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct WorkerConfig {
    pub(crate) worker_id: String,
    pub(crate) initial_position: InitialPosition,
    pub(crate) failover_time: Duration,
    pub(crate) renew_interval: Duration,
    pub(crate) take_interval: Duration,
    pub(crate) max_leases_per_worker: usize,
    pub(crate) max_leases_to_steal: usize,
    pub(crate) idle_time_between_reads: Duration,
    pub(crate) max_records: i32,
    pub(crate) prefetch_max_records: usize,
    pub(crate) prefetch_max_bytes: usize,
    pub(crate) shard_sync_interval: Duration,
    pub(crate) parent_poll_interval: Duration,
    pub(crate) lease_cleanup_interval: Duration,
    pub(crate) lease_call_timeout: Duration,
    pub(crate) kinesis_call_timeout: Duration,
    pub(crate) failure_backoff_base: Duration,
    pub(crate) failure_backoff_max: Duration,
    pub(crate) resume_own_leases_at_start: bool,
    pub(crate) jitter_seed: Option<u64>,
    pub(crate) fan_out_consumer: Option<String>,
    pub(crate) graceful_handoff: bool,
    pub(crate) graceful_handoff_timeout: Duration,
    pub(crate) balance_floor_kbps: Option<f64>,
    pub(crate) former_stream_leases: crate::streams::FormerStreamLeases,
    pub(crate) slow_call_warning: Option<Duration>,
}

/// A setting a worker cannot run with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
#[error("invalid worker setting {setting}: {problem}")]
pub struct ConfigError {
    /// The setting's name (its `WorkerConfig` method).
    pub setting: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        let failover = Duration::from_secs(10);
        WorkerConfig {
            worker_id: default_worker_id(),
            initial_position: InitialPosition::Latest,
            failover_time: failover,
            renew_interval: failover / 3,
            take_interval: failover * 2,
            max_leases_per_worker: usize::MAX,
            max_leases_to_steal: 1,
            idle_time_between_reads: Duration::from_millis(1500),
            max_records: 10_000,
            prefetch_max_records: 30_000,
            prefetch_max_bytes: 32 * 1024 * 1024,
            shard_sync_interval: Duration::from_secs(60),
            parent_poll_interval: Duration::from_secs(10),
            lease_cleanup_interval: Duration::from_secs(300),
            lease_call_timeout: Duration::from_secs(5),
            kinesis_call_timeout: Duration::from_secs(10),
            failure_backoff_base: Duration::from_secs(1),
            failure_backoff_max: Duration::from_secs(60),
            resume_own_leases_at_start: true,
            jitter_seed: None,
            fan_out_consumer: None,
            graceful_handoff: true,
            graceful_handoff_timeout: Duration::from_secs(30),
            balance_floor_kbps: None,
            former_stream_leases: crate::streams::FormerStreamLeases::Keep,
            slow_call_warning: Some(Duration::from_secs(60)),
        }
    }
}

/// Host name plus a random suffix, so two workers on one host differ.
fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_owned());
    format!("{host}-{:08x}", rand::random::<u32>())
}

impl WorkerConfig {
    /// This worker's id in the lease table. Default: host name plus a random suffix.
    pub fn worker_id(mut self, id: impl Into<String>) -> Self {
        self.worker_id = id.into();
        self
    }

    /// Where shards without a checkpoint start. Default `Latest`.
    pub fn initial_position(mut self, position: InitialPosition) -> Self {
        self.initial_position = position;
        self
    }

    /// How long a lease's counter may stand still before other workers take it. Default 10 s.
    /// Also sets the renew interval to a third of it and the take interval to twice it, as the
    /// Java KCL derives them; set those after this to change them.
    pub fn failover_time(mut self, failover: Duration) -> Self {
        self.failover_time = failover;
        self.renew_interval = failover / 3;
        self.take_interval = failover * 2;
        self
    }

    /// How often held leases are renewed. Default failover time / 3.
    pub fn renew_interval(mut self, interval: Duration) -> Self {
        self.renew_interval = interval;
        self
    }

    /// How often the worker looks for leases to take. Default failover time × 2.
    pub fn take_interval(mut self, interval: Duration) -> Self {
        self.take_interval = interval;
        self
    }

    /// Most leases this worker holds. Default unlimited.
    pub fn max_leases_per_worker(mut self, max: usize) -> Self {
        self.max_leases_per_worker = max;
        self
    }

    /// Most leases stolen in one taking round. Default 1.
    pub fn max_leases_to_steal(mut self, max: usize) -> Self {
        self.max_leases_to_steal = max;
        self
    }

    /// Pause between GetRecords calls when a shard is caught up. Default 1,500 ms.
    pub fn idle_time_between_reads(mut self, idle: Duration) -> Self {
        self.idle_time_between_reads = idle;
        self
    }

    /// Most records per GetRecords call (1 to 10,000). Default 10,000. A shard's reads start at
    /// 10 records a call and grow tenfold with each full page up to this: a backlog's first
    /// records reach the processor without waiting for a page of up to 10 MiB.
    pub fn max_records(mut self, max: i32) -> Self {
        self.max_records = max.clamp(1, 10_000);
        self
    }

    /// Most Kinesis records read ahead of the processor per shard. Default 30,000.
    pub fn prefetch_max_records(mut self, max: usize) -> Self {
        self.prefetch_max_records = max.max(1);
        self
    }

    /// Most bytes of record data read ahead of the processor per shard. Default 32 MiB.
    pub fn prefetch_max_bytes(mut self, max: usize) -> Self {
        self.prefetch_max_bytes = max.max(1);
        self
    }

    /// How often the shard list is synchronised into leases. Default 60 s.
    pub fn shard_sync_interval(mut self, interval: Duration) -> Self {
        self.shard_sync_interval = interval;
        self
    }

    /// How often a child shard checks whether its parents have finished. Default 10 s.
    pub fn parent_poll_interval(mut self, interval: Duration) -> Self {
        self.parent_poll_interval = interval;
        self
    }

    /// How often leases of finished shards whose children have started are deleted.
    /// Default 5 minutes.
    pub fn lease_cleanup_interval(mut self, interval: Duration) -> Self {
        self.lease_cleanup_interval = interval;
        self
    }

    /// The limit on each DynamoDB call (each attempt; up to 3 attempts for throttled or
    /// transient failures). Default 5 s.
    pub fn lease_call_timeout(mut self, timeout: Duration) -> Self {
        self.lease_call_timeout = timeout;
        self
    }

    /// The limit on each Kinesis call (GetRecords, GetShardIterator, ListShards,
    /// DescribeStreamSummary; each attempt). Default 10 s.
    pub fn kinesis_call_timeout(mut self, timeout: Duration) -> Self {
        self.kinesis_call_timeout = timeout;
        self
    }

    /// The back-off before a shard whose processor failed (returned an error or panicked)
    /// restarts from its last checkpoint: a jittered delay whose cap starts at `base` and doubles
    /// per consecutive failure up to `max`. Default 1 s up to 60 s.
    pub fn failure_backoff(mut self, base: Duration, max: Duration) -> Self {
        self.failure_backoff_base = base;
        self.failure_backoff_max = max;
        self
    }

    /// Whether a worker, when it starts, at once takes back the unfinished leases that the lease
    /// table shows owned by its own worker id (left by an earlier process with the same id that
    /// was killed), as the Java KCL does. Default true: a restart with a stable id (host or pod
    /// name) resumes within seconds. With false, such leases are taken like any other expired
    /// lease, after the failover time: safer if two live processes could share an id by
    /// mistake. Either way, a lease owned by this id that this process does not hold is
    /// takeable once expired.
    pub fn resume_own_leases_at_start(mut self, resume: bool) -> Self {
        self.resume_own_leases_at_start = resume;
        self
    }

    /// Seeds every back-off jitter of this worker (retries, restarts, reads), for deterministic
    /// tests under a paused clock. Default: random. Give each worker of a real fleet its own
    /// randomness (the default), or their retries fall into step.
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.jitter_seed = Some(seed);
        self
    }

    /// Reads through enhanced fan-out as the stream consumer `consumer_name` (registered at
    /// start-up if it does not exist, and never deregistered): each shard gets its own 2 MB/s
    /// pipe, pushed within milliseconds, instead of sharing the shard's 2 MB/s with every other
    /// polling reader. Every worker of the application uses the same name (the application
    /// name is a good one). Default: polling (GetRecords).
    pub fn enhanced_fan_out(mut self, consumer_name: impl Into<String>) -> Self {
        self.fan_out_consumer = Some(consumer_name.into());
        self
    }

    /// Whether a lease taken from a live worker to balance the fleet is handed off gracefully,
    /// as KCL 3.x does (`checkpointOwner`): its owner's processor gets `shutdown_requested` and
    /// checkpoints, and only then does this worker start it, so a planned move processes no
    /// record twice. With false, the lease is taken at once, as KCL 2.x does: both workers
    /// process it until the owner's next renewal (up to a third of the failover time), and
    /// records after the last checkpoint are processed twice. Default true.
    pub fn graceful_lease_handoff(mut self, graceful: bool) -> Self {
        self.graceful_handoff = graceful;
        self
    }

    /// How long a processor asked to hand its lease off may take to checkpoint and stop before
    /// the lease is handed over anyway (it then gets `lease_lost`). Default 30 s (KCL's
    /// `gracefulLeaseHandoffTimeoutMillis`).
    pub fn graceful_lease_handoff_timeout(mut self, timeout: Duration) -> Self {
        self.graceful_handoff_timeout = timeout;
        self
    }

    /// Balances the fleet by throughput instead of lease counts: each worker moves toward the
    /// same total of its leases' `throughputKBps` (the data it reads, measured at every renewal
    /// and stored in the lease), so a worker with a hot shard holds fewer leases. A lease weighs
    /// at least `floor_kbps`: shards below it (idle, or nearly) weigh the same and are balanced
    /// by count, and their ups and downs move nothing; a lease moves only when the gap between
    /// two workers exceeds 1.25 × its weight plus half the floor, so the fleet settles instead of
    /// churning. A good floor is a few percent of a shard's 1 MiB/s, e.g. 50. Default: balance
    /// by lease count (as the Java KCL 2.x).
    pub fn balance_by_throughput(mut self, floor_kbps: f64) -> Self {
        self.balance_floor_kbps = Some(floor_kbps);
        self
    }

    /// A multi-stream worker: what becomes of the leases of a stream no longer listed (removed,
    /// or deleted and created again). Default [`FormerStreamLeases::Keep`](crate::FormerStreamLeases::Keep)
    /// (the Java KCL's default): adding the stream back resumes from its checkpoints.
    /// [`DeleteAfter`](crate::FormerStreamLeases::DeleteAfter) deletes, at the lease cleanup
    /// (`lease_cleanup_interval`), those nobody has changed for that long (at least the
    /// failover time), so leases a worker still reads are never deleted.
    pub fn former_stream_leases(mut self, policy: crate::streams::FormerStreamLeases) -> Self {
        self.former_stream_leases = policy;
        self
    }

    /// When a call into the processor (`initialize`, `process_records`, `shard_ended`,
    /// `shutdown_requested`, `lease_lost`) has not returned after this long, a warning names the
    /// shard and the call, and again each time its running time doubles, until it returns; the
    /// call is never cancelled (its shard makes no progress meanwhile, while its lease is still
    /// renewed). Each warning also counts in `ProcessorCall.Slow`. Default 60 s (the Java KCL's
    /// `logWarningForTaskAfterMillis`, off there by default); `None` turns the warnings off.
    pub fn slow_processor_call_warning(mut self, after: Option<Duration>) -> Self {
        self.slow_call_warning = after;
        self
    }

    /// Checks every setting; [`crate::Worker::run`] calls it first.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |setting: &'static str, problem: &str| {
            Err(ConfigError {
                setting,
                problem: problem.to_owned(),
            })
        };
        if self.worker_id.trim().is_empty() {
            return bad("worker_id", "must not be empty");
        }
        for (setting, value) in [
            ("failover_time", self.failover_time),
            ("renew_interval", self.renew_interval),
            ("take_interval", self.take_interval),
            ("shard_sync_interval", self.shard_sync_interval),
            ("parent_poll_interval", self.parent_poll_interval),
            ("lease_cleanup_interval", self.lease_cleanup_interval),
            ("lease_call_timeout", self.lease_call_timeout),
            ("kinesis_call_timeout", self.kinesis_call_timeout),
            (
                "graceful_lease_handoff_timeout",
                self.graceful_handoff_timeout,
            ),
        ] {
            if value.is_zero() {
                return bad(setting, "must be greater than zero");
            }
        }
        if self.slow_call_warning.is_some_and(|after| after.is_zero()) {
            return bad(
                "slow_processor_call_warning",
                "must be greater than zero (None turns the warnings off)",
            );
        }
        if self.renew_interval >= self.failover_time {
            return Err(ConfigError {
                setting: "renew_interval",
                problem: format!(
                    "{:?} must be shorter than the failover time ({:?}), or leases expire between renewals (default: a third of it)",
                    self.renew_interval, self.failover_time
                ),
            });
        }
        if let Some(name) = &self.fan_out_consumer {
            let valid = (1..=128).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
            if !valid {
                return bad(
                    "enhanced_fan_out",
                    "a consumer name is 1 to 128 characters of a-z, A-Z, 0-9, '_', '-' and '.'",
                );
            }
        }
        if let Some(floor) = self.balance_floor_kbps
            && !(floor.is_finite() && floor > 0.0)
        {
            return bad(
                "balance_by_throughput",
                "the floor must be a positive number of KiB/s (e.g. 50)",
            );
        }
        if self.max_leases_per_worker == 0 {
            return bad("max_leases_per_worker", "must be at least 1");
        }
        if let Err(e) = BackoffConfig::new(self.failure_backoff_base, self.failure_backoff_max) {
            return bad("failure_backoff", &e.to_string());
        }
        Ok(())
    }

    pub(crate) fn failure_backoff_config(&self) -> BackoffConfig {
        BackoffConfig::new(self.failure_backoff_base, self.failure_backoff_max)
            .expect("validated before the worker runs")
    }

    /// The worker id in use.
    pub fn get_worker_id(&self) -> &str {
        &self.worker_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_that_would_panic_or_stall_are_refused_with_their_name() {
        assert_eq!(WorkerConfig::default().validate(), Ok(()));
        let err = WorkerConfig::default()
            .failover_time(Duration::ZERO)
            .validate()
            .unwrap_err();
        assert_eq!(err.setting, "failover_time");
        let err = WorkerConfig::default()
            .renew_interval(Duration::ZERO)
            .validate()
            .unwrap_err();
        assert_eq!(err.setting, "renew_interval");
        let err = WorkerConfig::default()
            .slow_processor_call_warning(Some(Duration::ZERO))
            .validate()
            .unwrap_err();
        assert_eq!(err.setting, "slow_processor_call_warning");
        let off = WorkerConfig::default().slow_processor_call_warning(None);
        assert_eq!(off.validate(), Ok(()));
        let err = WorkerConfig::default()
            .renew_interval(Duration::from_secs(10))
            .validate()
            .unwrap_err();
        assert!(
            err.to_string().contains("shorter than the failover time"),
            "{err}"
        );
        let err = WorkerConfig::default()
            .worker_id(" ")
            .validate()
            .unwrap_err();
        assert_eq!(err.setting, "worker_id");
        let err = WorkerConfig::default()
            .failure_backoff(Duration::from_secs(2), Duration::from_secs(1))
            .validate()
            .unwrap_err();
        assert_eq!(err.setting, "failure_backoff");
        let err = WorkerConfig::default()
            .lease_call_timeout(Duration::ZERO)
            .validate()
            .unwrap_err();
        assert_eq!(err.setting, "lease_call_timeout");
    }
}
