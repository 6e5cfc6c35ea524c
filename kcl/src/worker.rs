//! The worker: syncs shards into leases, renews and takes leases, runs one shard consumer per
//! held lease, and shuts down gracefully (every processor gets `shutdown_requested`, final
//! checkpoints are written, leases are released so other workers take them at once).

use std::collections::HashMap;
use std::sync::Arc;

use aws_config::SdkConfig;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::HeldLease;
use crate::config::WorkerConfig;
use crate::coordinator::LeaseCoordinator;
use crate::coordinator::taker::TakerConfig;
use crate::leases::{DynamoDbLeaseStore, LeaseError, LeaseStore};
use crate::lifecycle::{ShardConsumer, ShardOutcome};
use crate::processor::RecordProcessorFactory;
use crate::shard_sync;
use crate::stream::StreamRef;

/// Why a worker could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// The lease table could not be created or read.
    #[error("lease table: {0}")]
    Leases(#[from] LeaseError),
    /// The stream's shards could not be listed.
    #[error("shard sync: {0}")]
    ShardSync(String),
}

/// Stops a running worker, from any task.
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    graceful: CancellationToken,
    immediate: CancellationToken,
}

impl ShutdownHandle {
    /// Graceful: stop taking leases, give every processor `shutdown_requested` (its chance to
    /// checkpoint), release every lease, then `run` returns.
    pub fn shutdown(&self) {
        self.graceful.cancel();
    }

    /// Immediate: stop everything now without releasing leases (as a crash would; other workers
    /// take the leases after the failover time).
    pub fn stop_now(&self) {
        self.immediate.cancel();
    }
}

/// A KCL-style worker for one stream and one application (lease table).
pub struct Worker {
    config: Arc<WorkerConfig>,
    kinesis: aws_sdk_kinesis::Client,
    store: Arc<dyn LeaseStore>,
    stream: StreamRef,
    factory: Arc<dyn RecordProcessorFactory>,
    handle: ShutdownHandle,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("stream", &self.stream)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// A worker reading `stream` (name or ARN) for `application_name` (also the lease table's
    /// name), with processors from `factory`.
    pub fn new(
        sdk_config: &SdkConfig,
        application_name: &str,
        stream: &str,
        factory: impl RecordProcessorFactory,
        config: WorkerConfig,
    ) -> Worker {
        let store =
            DynamoDbLeaseStore::new(aws_sdk_dynamodb::Client::new(sdk_config), application_name);
        Self::with_store(
            aws_sdk_kinesis::Client::new(sdk_config),
            Arc::new(store),
            stream,
            factory,
            config,
        )
    }

    /// A worker with its own lease store (any [`LeaseStore`]).
    pub fn with_store(
        kinesis: aws_sdk_kinesis::Client,
        store: Arc<dyn LeaseStore>,
        stream: &str,
        factory: impl RecordProcessorFactory,
        config: WorkerConfig,
    ) -> Worker {
        Worker {
            config: Arc::new(config),
            kinesis,
            store,
            stream: StreamRef::new(stream),
            factory: Arc::new(factory),
            handle: ShutdownHandle {
                graceful: CancellationToken::new(),
                immediate: CancellationToken::new(),
            },
        }
    }

    /// A handle that stops this worker.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.handle.clone()
    }

    /// Deletes leases of finished shards whose children have started.
    async fn clean_up(&self) {
        let leases = match self.store.list().await {
            Ok(leases) => leases,
            Err(e) => return tracing::warn!(error = %e, "lease cleanup could not list leases"),
        };
        for key in crate::cleanup::deletable(&leases) {
            match self.store.delete(&key).await {
                Ok(()) => {
                    tracing::info!(lease = %key, "deleted the lease of a finished shard whose children have started")
                }
                Err(e) => tracing::warn!(lease = %key, error = %e, "lease cleanup failed"),
            }
        }
    }

    /// Runs until shut down.
    pub async fn run(self) -> Result<(), WorkerError> {
        let config = self.config.clone();
        self.store.ensure_table().await?;
        let created = shard_sync::sync(
            &self.kinesis,
            &self.stream,
            &*self.store,
            config.initial_position,
        )
        .await
        .map_err(WorkerError::ShardSync)?;
        tracing::info!(worker = %config.worker_id, stream = %self.stream.as_str(), created, "shard sync done");

        let coordinator = LeaseCoordinator::new(
            self.store.clone(),
            TakerConfig {
                worker_id: config.worker_id.clone(),
                failover_time: config.failover_time,
                max_leases_per_worker: config.max_leases_per_worker,
                max_leases_to_steal: config.max_leases_to_steal,
            },
        );
        let consumers_stop = CancellationToken::new();
        let mut consumers: JoinSet<(Arc<HeldLease>, ShardOutcome)> = JoinSet::new();
        let mut running: HashMap<String, Arc<HeldLease>> = HashMap::new();
        let mut renew = tokio::time::interval(config.renew_interval);
        let mut take = tokio::time::interval(config.take_interval);
        let mut sync = tokio::time::interval(config.shard_sync_interval);
        let mut cleanup = tokio::time::interval(config.lease_cleanup_interval);
        for t in [&mut renew, &mut take, &mut sync, &mut cleanup] {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        sync.reset();
        cleanup.reset();

        loop {
            tokio::select! {
                () = self.handle.immediate.cancelled() => {
                    consumers.abort_all();
                    return Ok(());
                }
                () = self.handle.graceful.cancelled() => break,
                _ = renew.tick() => coordinator.renew_all().await,
                _ = take.tick() => match coordinator.take_round().await {
                    Ok(taken) => {
                        for held in taken {
                            running.insert(held.key.clone(), held.clone());
                            let processor = self.factory.create(&held.key);
                            let consumer = ShardConsumer {
                                held: held.clone(),
                                store: self.store.clone(),
                                kinesis: self.kinesis.clone(),
                                stream: self.stream.clone(),
                                config: config.clone(),
                                shutdown: consumers_stop.child_token(),
                            };
                            consumers.spawn(async move { (held, consumer.run(processor).await) });
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "listing leases failed"),
                },
                _ = sync.tick() => {
                    if let Err(e) = shard_sync::sync(&self.kinesis, &self.stream, &*self.store, config.initial_position).await {
                        tracing::warn!(error = %e, "periodic shard sync failed");
                    }
                }
                _ = cleanup.tick() => self.clean_up().await,
                Some(done) = consumers.join_next(), if !consumers.is_empty() => {
                    if let Ok((held, outcome)) = done {
                        running.remove(&held.key);
                        match outcome {
                            // A finished shard is released: nobody needs to hold it any more.
                            ShardOutcome::Finished => coordinator.release(&held).await,
                            ShardOutcome::LeaseLost | ShardOutcome::ShutDown => coordinator.drop_lease(&held.key),
                        }
                    }
                }
            }
        }

        // Graceful shutdown: processors get shutdown_requested while leases are still renewed.
        tracing::info!(worker = %config.worker_id, leases = coordinator.held_count(), "shutting down gracefully");
        consumers_stop.cancel();
        loop {
            tokio::select! {
                () = self.handle.immediate.cancelled() => {
                    consumers.abort_all();
                    return Ok(());
                }
                _ = renew.tick() => coordinator.renew_all().await,
                done = consumers.join_next() => match done {
                    Some(Ok((held, outcome))) => {
                        running.remove(&held.key);
                        if outcome != ShardOutcome::LeaseLost {
                            coordinator.release(&held).await;
                        }
                    }
                    Some(Err(e)) => tracing::error!(error = %e, "shard consumer task failed"),
                    None => break,
                },
            }
        }
        // Leases taken but whose consumers already ended are released too.
        for held in running.values() {
            coordinator.release(held).await;
        }
        Ok(())
    }
}
