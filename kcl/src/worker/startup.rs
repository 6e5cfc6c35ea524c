//! Start-up: the stream exists, the lease table exists and belongs to it, the shards have
//! leases, and the leases this worker id held before a restart are back. Each step retries
//! throttled and transient failures with back-off (logging each) until it succeeds; a fatal one
//! ends `run` with a typed error. The caller races all of it against shutdown.

use std::sync::Arc;
use std::time::Duration;

use kinesis_retry::{AwsError, BackoffConfig, Class, RetryPolicy, retry_notify};

use super::{Worker, WorkerError};
use crate::checkpoint::HeldLease;
use crate::coordinator::LeaseCoordinator;
use crate::coordinator::taker::{Balance, TakerConfig};
use crate::leases::LeaseError;
use crate::shard_sync::{self, SyncError};

/// What start-up hands to the main loop.
pub(super) struct Started {
    pub(super) identifier: Arc<str>,
    pub(super) coordinator: Arc<LeaseCoordinator>,
    pub(super) resumed: Vec<Arc<HeldLease>>,
    /// The enhanced fan-out consumer's ARN, when reading through enhanced fan-out.
    pub(super) fan_out: Option<Arc<str>>,
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
            tracing::warn!(stream = %self.stream.as_str(), error = %e, retry_in = ?delay, "worker start-up: {what} failed; retrying");
        };
        let policy = RetryPolicy::new(u32::MAX, backoff);
        retry_notify(policy, &mut self.jitter.rng(), class, log, step).await
    }

    /// Start-up: the stream exists, the lease table exists and belongs to it, the shards have
    /// leases, and the leases this worker id held before a restart are back.
    pub(super) async fn start(&self) -> Result<Started, WorkerError> {
        let stream = self.stream.as_str().to_owned();
        let summary = self
            .step("checking the stream", AwsError::class, || {
                shard_sync::summarize_stream(&*self.kinesis, &self.stream, &self.jitter)
            })
            .await
            .map_err(|e| self.kinesis_error(e))?;
        let identifier: Arc<str> = summary.identifier().into();
        let fan_out = match &self.config.fan_out_consumer {
            Some(name) => {
                let consumer = self
                    .step(
                        "registering the enhanced fan-out consumer",
                        AwsError::class,
                        || crate::fan_out::ensure_consumer(&*self.kinesis, &summary.arn, name),
                    )
                    .await
                    .map_err(|e| self.kinesis_error(e))?;
                tracing::info!(consumer = %consumer.arn, "reading through enhanced fan-out");
                Some(Arc::from(consumer.arn))
            }
            None => None,
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
        if let Some(found) = leases
            .iter()
            .filter_map(|l| l.stream.as_deref())
            .find(|s| **s != *identifier)
        {
            return Err(WorkerError::LeaseTableOfAnotherStream {
                expected: identifier.to_string(),
                found: found.to_owned(),
            });
        }
        let initial = self.config.initial_position;
        let created = self
            .step("the first shard sync", sync_class, || {
                shard_sync::sync(
                    &*self.kinesis,
                    &self.stream,
                    &identifier,
                    &self.store,
                    initial,
                    &self.jitter,
                    &self.closed,
                )
            })
            .await
            .map_err(|e| self.sync_error(e))?;
        tracing::info!(worker = %self.config.worker_id, stream = %stream, created, "shard sync done");
        let coordinator = Arc::new(LeaseCoordinator::new(
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
        ));
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
            identifier,
            coordinator,
            resumed,
            fan_out,
        })
    }

    pub(super) fn kinesis_error(&self, e: AwsError) -> WorkerError {
        let stream = self.stream.as_str().to_owned();
        if e.is_not_found() {
            WorkerError::StreamNotFound { stream, source: e }
        } else {
            WorkerError::Kinesis { stream, source: e }
        }
    }

    pub(super) fn sync_error(&self, e: SyncError) -> WorkerError {
        match e {
            SyncError::Kinesis(e) => self.kinesis_error(e),
            SyncError::Leases(e @ LeaseError::TableNotFound { .. }) => {
                WorkerError::LeaseTableDeleted { source: e }
            }
            SyncError::Leases(e) => WorkerError::Leases(e),
        }
    }
}

pub(super) fn sync_class(e: &SyncError) -> Class {
    match e {
        SyncError::Kinesis(e) => e.class(),
        SyncError::Leases(e) => e.class(),
    }
}
