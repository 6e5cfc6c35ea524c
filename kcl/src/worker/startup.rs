//! Start-up: the stream exists, the lease table exists and belongs to it, the shards have
//! leases, and the leases this worker id held before a restart are back. Each step retries
//! throttled and transient failures with back-off (logging each) until it succeeds; a fatal one
//! ends `run` with a typed error. The caller races all of it against shutdown.

use std::sync::Arc;
use std::time::Duration;

use kinesis_retry::{BackoffConfig, Class, RetryPolicy, retry_notify};

use super::streams::sync_error;
use super::{Stop, Worker, WorkerError};
use crate::coordinator::LeaseCoordinator;
use crate::coordinator::taker::{Balance, TakerConfig};
use crate::held::HeldLease;
use crate::leases::{Lease, LeaseError};
use crate::shard_sync::{self, SyncError};

/// What start-up hands to the main loop.
pub(super) struct Started {
    pub(super) coordinator: Arc<LeaseCoordinator>,
    pub(super) resumed: Vec<Arc<HeldLease>>,
}

impl Worker {
    /// Runs `step` until it succeeds, through the shared retry loop with no attempt limit:
    /// throttled and transient failures are logged and retried with back-off, a fatal one is
    /// returned.
    async fn step<T, E: std::fmt::Display, Fut: std::future::Future<Output = Result<T, E>>>(
        &self,
        what: &str,
        class: impl Fn(&E) -> Class,
        step: impl FnMut() -> Fut,
    ) -> Result<T, E> {
        let backoff = BackoffConfig::new(Duration::from_millis(200), Duration::from_secs(10))
            .expect("valid back-off");
        let log = |e: &E, delay: Duration| {
            tracing::warn!(error = %e, retry_in = ?delay, "worker start-up: {what} failed; retrying");
        };
        let policy = RetryPolicy::new(u32::MAX, backoff);
        retry_notify(policy, &mut self.jitter.rng(), class, log, step).await
    }

    /// Start-up: the stream exists, the lease table exists and belongs to it, the shards have
    /// leases, and the leases this worker id held before a restart are back. A multi-stream
    /// worker starts with the streams it can read (one that fails is logged and tried again at
    /// each shard sync).
    pub(super) async fn start(&self) -> Result<Started, WorkerError> {
        // A single-stream worker checks its stream before it creates any table.
        let single = match self.active.multi {
            true => None,
            false => {
                let spec = self.desired.specs().remove(0);
                let stream = self
                    .step("checking the stream", worker_error_class, || {
                        self.describe(&spec)
                    })
                    .await?;
                Some((spec, stream))
            }
        };
        self.step(
            "creating or finding the lease table",
            LeaseError::class,
            || self.store.ensure_table(),
        )
        .await
        .map_err(WorkerError::Leases)?;
        let leases = self
            .step("reading the lease table", LeaseError::class, || {
                self.store.list()
            })
            .await
            .map_err(WorkerError::Leases)?;
        check_table_kind(&leases, self.active.multi)?;
        match single {
            Some((spec, stream)) => {
                if let Some(found) = leases
                    .iter()
                    .filter_map(|l| l.stream.as_deref())
                    .find(|s| **s != *stream.identifier)
                {
                    return Err(WorkerError::LeaseTableOfAnotherStream {
                        expected: stream.identifier.to_string(),
                        found: found.to_owned(),
                    });
                }
                let created = self
                    .step("the first shard sync", sync_class, || {
                        shard_sync::sync(&*self.kinesis, &stream, &self.store, &self.jitter)
                    })
                    .await
                    .map_err(|e| sync_error(&stream.stream, e))?;
                tracing::info!(worker = %self.config.worker_id, stream = %spec.name, created, "shard sync done");
                self.active.insert(&spec.name, stream);
            }
            None => {
                if let Some(Stop::LeasesGone(WorkerError::LeaseTableDeleted { source })) =
                    self.reconcile_streams().await
                {
                    return Err(WorkerError::LeaseTableDeleted { source });
                }
            }
        }
        let active = self.active.clone();
        let coordinator = Arc::new(
            LeaseCoordinator::new(
                self.store.clone(),
                TakerConfig {
                    worker_id: self.config.worker_id.clone(),
                    failover_time: self.config.failover_time,
                    max_leases_per_worker: self.config.max_leases_per_worker,
                    max_leases_to_steal: self.config.max_leases_to_steal,
                    seed: rand::Rng::random(&mut self.jitter.rng()),
                    graceful_steals: self.config.graceful_handoff,
                    handoff_timeout: self.config.graceful_handoff_timeout,
                    balance: match self.config.balance_floor_kbps {
                        Some(floor_kbps) => Balance::Throughput { floor_kbps },
                        None => Balance::Count,
                    },
                },
            )
            // A multi-stream worker takes only leases of the streams it reads.
            .with_filter(Arc::new(move |lease: &Lease| active.accepts(lease))),
        );
        let resumed = if self.config.resume_own_leases_at_start {
            self.step(
                "resuming this worker id's leases",
                LeaseError::class,
                || coordinator.resume_own(),
            )
            .await
            .map_err(WorkerError::Leases)?
        } else {
            Vec::new()
        };
        Ok(Started {
            coordinator,
            resumed,
        })
    }
}

/// Refuses a table of the other kind (single-stream leases for a multi-stream worker, or the
/// other way round).
fn check_table_kind(leases: &[Lease], multi: bool) -> Result<(), WorkerError> {
    let other = leases
        .iter()
        .find(|l| l.stream_identifier.is_some() != multi);
    let kind = |multi: bool| {
        if multi {
            "multi-stream"
        } else {
            "single-stream"
        }
    };
    match other {
        Some(lease) => Err(WorkerError::LeaseTableOfOtherKind {
            expected: kind(multi),
            found: kind(!multi),
            key: lease.key.clone(),
        }),
        None => Ok(()),
    }
}

/// How a start-up step's failure is retried: a Kinesis error by its class; the lease table's by
/// its own.
fn worker_error_class(e: &WorkerError) -> Class {
    match e {
        WorkerError::StreamNotFound { source, .. } | WorkerError::Kinesis { source, .. } => {
            source.class()
        }
        WorkerError::Leases(e) => e.class(),
        _ => Class::Fatal,
    }
}

pub(super) fn sync_class(e: &SyncError) -> Class {
    match e {
        SyncError::Kinesis(e) => e.class(),
        SyncError::Leases(e) => e.class(),
    }
}
