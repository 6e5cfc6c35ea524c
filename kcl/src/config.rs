//! Worker settings. Every setter documents its default; defaults follow the Java KCL.

use std::time::{Duration, SystemTime};

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

    /// Most records per GetRecords call (1 to 10,000). Default 10,000.
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

    /// The worker id in use.
    pub fn get_worker_id(&self) -> &str {
        &self.worker_id
    }
}
