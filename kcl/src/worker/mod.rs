//! The worker: syncs shards into leases, renews and takes leases, runs one shard consumer per
//! held lease, and shuts down gracefully (every processor gets `shutdown_requested`, final
//! checkpoints are written, leases are released so other workers take them at once).
//!
//! On a bad day: every start-up step retries throttled and transient failures with back-off
//! (logging each) until it succeeds or the worker is shut down; a fatal answer stops `run` with a
//! [`WorkerError`] that says what to fix. While running, a deleted stream or lease table, or a
//! Kinesis refusal no retry can fix, stops the worker with such an error; a lease for a shard
//! that no longer exists is deleted; a failing processor is restarted from its checkpoint.

mod builder;
mod consumers;
mod ended;
mod error;
mod startup;
mod status;
mod streams;

use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use kinesis_api::{Kinesis, SdkKinesis};
use kinesis_retry::AwsError;
use tokio_util::sync::CancellationToken;

use crate::config::WorkerConfig;
use crate::coordinator::renewer::Renewer;
use crate::jitter::Jitter;
use crate::leases::{DynamoDbLeaseStore, LeaseError, LeaseStore};
use crate::lifecycle::ShardOutcome;
use crate::processor::RecordProcessorFactory;
use crate::shard_sync;
use crate::streams::{Active, Desired, StreamSpec, StreamsHandle};
pub use builder::{BuildError, WorkerBuilder};
use consumers::{Consumers, Context, Ended};
pub use error::WorkerError;
use kinesis_api::StreamRef;
use startup::Started;

/// How often a worker reads the leases handed off to it (while there are any), to start them
/// as soon as their old owner has let go (or half the renew interval, if shorter).
const HANDOFF_POLL: Duration = Duration::from_secs(1);
pub(crate) use status::Board;
pub use status::{ShardPhase, ShardStatus, StatusHandle, WorkerPhase, WorkerStatus};

/// Stops a running worker, from any task.
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    graceful: CancellationToken,
    immediate: CancellationToken,
}

impl ShutdownHandle {
    /// Graceful: stop taking leases, give every processor `shutdown_requested` (its chance to
    /// checkpoint), release every lease, then `run` returns. Honoured at every stage, start-up
    /// included.
    pub fn shutdown(&self) {
        self.graceful.cancel();
    }

    /// Immediate: stop everything now without releasing leases (as a crash would; other workers
    /// take the leases after the failover time).
    pub fn stop_now(&self) {
        self.immediate.cancel();
    }
}

/// A KCL-style worker for one application (lease table) and one stream, or several
/// ([`WorkerBuilder::streams`]).
pub struct Worker {
    config: Arc<WorkerConfig>,
    kinesis: Arc<dyn Kinesis>,
    store: Arc<dyn LeaseStore>,
    /// The streams the application lists (one for a single-stream worker).
    desired: Arc<Desired>,
    /// The streams being read now.
    active: Arc<Active>,
    factory: Arc<dyn RecordProcessorFactory>,
    handle: ShutdownHandle,
    jitter: Arc<Jitter>,
    status: Arc<status::Board>,
    /// Cancelled at a graceful shutdown: every stream's token is its child.
    consumers_stop: CancellationToken,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("streams", &self.desired.specs())
            .field("multi_stream", &self.active.multi)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Why the main loop stopped early.
enum Stop {
    /// Shut down gracefully, then return this error.
    Gracefully(WorkerError),
    /// The lease table is gone: every lease is lost, processors get `lease_lost`.
    LeasesGone(WorkerError),
}

/// The SDK client behind the Kinesis boundary, with the configuration's call timeout (the SDK's
/// own retries are turned off: the worker retries by class).
fn sdk_kinesis(client: &aws_sdk_kinesis::Client, config: &WorkerConfig) -> Arc<dyn Kinesis> {
    let timeout = config.kinesis_call_timeout.max(Duration::from_millis(1));
    Arc::new(SdkKinesis::new(client, timeout))
}

impl Worker {
    /// Builds a worker from named parts, checked at [`WorkerBuilder::build`]:
    ///
    /// ```no_run
    /// # async fn demo(factory: impl kcl::RecordProcessorFactory) -> Result<(), Box<dyn std::error::Error>> {
    /// let sdk_config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    /// let worker = kcl::Worker::builder()
    ///     .sdk_config(&sdk_config)
    ///     .application_name("my-application") // also the lease table's name
    ///     .stream("my-stream")
    ///     .processor_factory(factory)
    ///     .config(kcl::WorkerConfig::default()) // optional
    ///     .build()?;
    /// worker.run().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder() -> WorkerBuilder {
        WorkerBuilder::default()
    }

    /// A worker reading `stream` (name or ARN) for `application_name` (also the lease table's
    /// name), with processors from `factory`; [`Worker::builder`] names the parts and checks
    /// them before the worker runs. Every AWS call is limited by the configuration's
    /// call timeouts (the SDK's own retries are turned off: the worker retries by class).
    pub fn new(
        sdk_config: &SdkConfig,
        application_name: &str,
        stream: &str,
        factory: impl RecordProcessorFactory,
        config: WorkerConfig,
    ) -> Worker {
        let store =
            DynamoDbLeaseStore::new(aws_sdk_dynamodb::Client::new(sdk_config), application_name)
                .with_call_timeout(config.lease_call_timeout);
        Self::with_store(
            aws_sdk_kinesis::Client::new(sdk_config),
            Arc::new(store),
            stream,
            factory,
            config,
        )
    }

    /// A worker with its own lease store (any [`LeaseStore`]). The Kinesis client's retry and
    /// timeout settings are replaced as in [`Worker::new`].
    pub fn with_store(
        kinesis: aws_sdk_kinesis::Client,
        store: Arc<dyn LeaseStore>,
        stream: &str,
        factory: impl RecordProcessorFactory,
        config: WorkerConfig,
    ) -> Worker {
        let kinesis = sdk_kinesis(&kinesis, &config);
        Self::with_kinesis(kinesis, store, stream, factory, config)
    }

    /// A worker on any implementation of the Kinesis boundary (an in-memory Kinesis in tests)
    /// and any lease store.
    pub fn with_kinesis(
        kinesis: Arc<dyn Kinesis>,
        store: Arc<dyn LeaseStore>,
        stream: &str,
        factory: impl RecordProcessorFactory,
        config: WorkerConfig,
    ) -> Worker {
        let streams = vec![StreamSpec::new(stream)];
        Self::assemble(kinesis, store, streams, false, Arc::new(factory), config)
    }

    fn assemble(
        kinesis: Arc<dyn Kinesis>,
        store: Arc<dyn LeaseStore>,
        streams: Vec<StreamSpec>,
        multi: bool,
        factory: Arc<dyn RecordProcessorFactory>,
        config: WorkerConfig,
    ) -> Worker {
        Worker {
            status: status::Board::new(&config.worker_id),
            jitter: Arc::new(Jitter::new(config.jitter_seed)),
            config: Arc::new(config),
            kinesis,
            store,
            desired: Desired::new(streams),
            active: Active::new(multi),
            factory,
            handle: ShutdownHandle {
                graceful: CancellationToken::new(),
                immediate: CancellationToken::new(),
            },
            consumers_stop: CancellationToken::new(),
        }
    }

    /// A handle that changes a multi-stream worker's list of streams while it runs; `None` for
    /// a single-stream worker (built with [`WorkerBuilder::stream`]).
    pub fn streams_handle(&self) -> Option<StreamsHandle> {
        self.active
            .multi
            .then(|| StreamsHandle(self.desired.clone()))
    }

    /// A handle that stops this worker.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.handle.clone()
    }

    /// A handle that reads what this worker is doing (its phase, and each held shard's phase,
    /// lag and progress), from any task, for health checks.
    pub fn status_handle(&self) -> StatusHandle {
        StatusHandle(self.status.clone())
    }

    /// Runs until shut down, or until something no retry can fix (see [`WorkerError`]).
    pub async fn run(self) -> Result<(), WorkerError> {
        self.config.validate()?;
        crate::kcl_metrics::describe();
        // A multi-stream worker's list changes: its log lines name their stream themselves.
        let span = match self.active.multi {
            true => tracing::info_span!("worker", worker = %self.config.worker_id),
            false => {
                let stream = self.desired.specs().remove(0).name;
                tracing::info_span!("worker", worker = %self.config.worker_id, stream = %stream)
            }
        };
        tracing::Instrument::instrument(self.run_inner(), span).await
    }

    async fn run_inner(self) -> Result<(), WorkerError> {
        /// Marks the worker stopped however `run` ends.
        struct Stopped(Arc<status::Board>);
        impl Drop for Stopped {
            fn drop(&mut self) {
                self.0.worker_phase(WorkerPhase::Stopped);
            }
        }
        let _stopped = Stopped(self.status.clone());
        let started = tokio::select! {
            biased;
            () = self.handle.graceful.cancelled() => return Ok(()),
            () = self.handle.immediate.cancelled() => return Ok(()),
            started = self.start() => started?,
        };
        self.status.worker_phase(WorkerPhase::Running);
        self.process(started).await
    }

    /// `work`'s result, or `None` when the worker is shut down first (a stream's start or sync
    /// waiting on a slow Kinesis does not hold a shutdown up).
    async fn or_shutdown<T>(&self, work: impl std::future::Future<Output = T>) -> Option<T> {
        tokio::select! {
            biased;
            () = self.handle.graceful.cancelled() => None,
            () = self.handle.immediate.cancelled() => None,
            done = work => Some(done),
        }
    }

    /// Whether the stream is gone (asked again, so one odd answer does not stop the worker).
    async fn stream_is_gone(&self, stream: &StreamRef) -> Option<AwsError> {
        match shard_sync::describe_stream(&*self.kinesis, stream, &self.jitter).await {
            Err(e) if e.is_not_found() => Some(e),
            _ => None,
        }
    }

    /// The main loop, then the shutdown.
    async fn process(self, started: Started) -> Result<(), WorkerError> {
        let config = self.config.clone();
        let Started {
            coordinator,
            resumed,
        } = started;
        let mut consumers = Consumers::new(Context {
            store: self.store.clone(),
            kinesis: self.kinesis.clone(),
            config: config.clone(),
            factory: self.factory.clone(),
            jitter: self.jitter.clone(),
            stop: self.consumers_stop.clone(),
            status: self.status.clone(),
        });
        self.start_consumers(resumed, &coordinator, &mut consumers)
            .await;
        // Renewals run on their own task at a fixed rate, never behind anything below.
        let mut renewer = Renewer::start(coordinator.clone(), config.renew_interval);
        let mut take = tokio::time::interval(config.take_interval);
        let mut sync = tokio::time::interval(config.shard_sync_interval);
        let mut cleanup = tokio::time::interval(config.lease_cleanup_interval);
        let mut handoffs = tokio::time::interval(HANDOFF_POLL.min(config.renew_interval / 2));
        for t in [&mut take, &mut sync, &mut cleanup, &mut handoffs] {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        sync.reset();
        cleanup.reset();
        let mut former = crate::streams::FormerLeases::default();

        let stop: Option<Stop> = loop {
            let stop = tokio::select! {
                biased;
                () = self.handle.immediate.cancelled() => {
                    consumers.abort_all();
                    renewer.abort();
                    return Ok(());
                }
                () = self.handle.graceful.cancelled() => break None,
                e = renewer.failed() => Some(table_gone(e)),
                _ = take.tick() => match coordinator.take_round().await {
                    Ok(taken) => {
                        self.start_consumers(taken, &coordinator, &mut consumers).await;
                        None
                    }
                    Err(e @ LeaseError::TableNotFound { .. }) => Some(table_gone(e)),
                    Err(e) => {
                        tracing::warn!(error = %e, "taking leases failed; trying again next round");
                        None
                    }
                },
                // A multi-stream worker's list changed: streams added are read at once, streams
                // removed stop.
                () = self.desired.changed.notified(), if self.active.multi => {
                    match self.or_shutdown(self.reconcile_streams()).await {
                        Some(stop) => stop,
                        None => break None,
                    }
                }
                _ = sync.tick() => match self.or_shutdown(self.sync_streams()).await {
                    Some(stop) => stop,
                    None => break None,
                },
                _ = handoffs.tick(), if coordinator.awaiting_count() > 0 => match coordinator.poll_handoffs().await {
                    Ok(taken) => {
                        self.start_consumers(taken, &coordinator, &mut consumers).await;
                        None
                    }
                    Err(e) => Some(table_gone(e)),
                },
                _ = cleanup.tick() => {
                    crate::cleanup::run(&*self.store).await;
                    self.delete_former_stream_leases(&mut former).await;
                    None
                }
                Some((held, stream, ended)) = consumers.next(), if !consumers.is_empty() => {
                    self.on_consumer_end(held, stream, ended, &coordinator, &mut consumers).await
                }
            };
            if stop.is_some() {
                break stop;
            }
        };

        let result = match stop {
            None => Ok(()),
            Some(Stop::Gracefully(e)) => Err(e),
            Some(Stop::LeasesGone(e)) => {
                coordinator.lose_all();
                Err(e)
            }
        };
        // Graceful shutdown: processors get shutdown_requested while leases are still renewed.
        tracing::info!(worker = %config.worker_id, leases = coordinator.held_count(), error = result.as_ref().err().map(tracing::field::display), "shutting down gracefully");
        self.status.worker_phase(WorkerPhase::ShuttingDown);
        consumers.stop();
        loop {
            tokio::select! {
                biased;
                () = self.handle.immediate.cancelled() => {
                    consumers.abort_all();
                    renewer.abort();
                    return result;
                }
                next = consumers.next() => match next {
                    Some((held, _, Ended::Outcome(ShardOutcome::LeaseLost))) => coordinator.drop_lease(&held),
                    Some((held, _, Ended::Panicked(message))) => {
                        tracing::error!(shard = %held.key, panic = %message, "record processor panicked during shutdown");
                        coordinator.release(&held).await;
                    }
                    Some((held, _, _)) => coordinator.release(&held).await,
                    None => break,
                },
            }
        }
        renewer.stop().await;
        result
    }
}

fn table_gone(e: LeaseError) -> Stop {
    Stop::LeasesGone(WorkerError::LeaseTableDeleted { source: e })
}
