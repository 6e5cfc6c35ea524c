//! The streams a worker reads: started and stopped as the application's list changes (a
//! multi-stream worker), synced into leases, and what a stream's failure means: a
//! single-stream worker stops with the error; a multi-stream worker stops reading that stream
//! only, says why, and tries it again at each shard sync.

use std::sync::Arc;

use kinesis_api::StreamRef;
use kinesis_retry::{AwsError, Class};

use super::consumers::Consumers;
use super::{Stop, Worker, WorkerError, table_gone};
use crate::coordinator::LeaseCoordinator;
use crate::held::HeldLease;
use crate::leases::LeaseError;
use crate::shard_sync::{self, SyncError};
use crate::streams::{FormerLeases, FormerStreamLeases, StreamContext, StreamSpec};

impl Worker {
    /// Describes a stream (and finds or registers its enhanced fan-out consumer): how to read
    /// it and name its leases. Each call is retried by class.
    pub(super) async fn describe(
        &self,
        spec: &StreamSpec,
    ) -> Result<Arc<StreamContext>, WorkerError> {
        let stream = StreamRef::new(&spec.name);
        let summary = shard_sync::summarize_stream(&*self.kinesis, &stream, &self.jitter)
            .await
            .map_err(|e| kinesis_error(&stream, e))?;
        let fan_out = match &self.config.fan_out_consumer {
            Some(name) => {
                let consumer = crate::fan_out::ensure_consumer(&*self.kinesis, &summary.arn, name)
                    .await
                    .map_err(|e| kinesis_error(&stream, e))?;
                tracing::info!(stream = %spec.name, consumer = %consumer.arn, "reading through enhanced fan-out");
                Some(Arc::from(consumer.arn))
            }
            None => None,
        };
        Ok(Arc::new(StreamContext {
            stream,
            identifier: summary.identifier().into(),
            multi: self.active.multi,
            initial: spec
                .initial_position
                .unwrap_or(self.config.initial_position),
            fan_out,
            closed: Arc::default(),
            stop: self.consumers_stop.child_token(),
        }))
    }

    /// A multi-stream worker's first look at a stream: described, its shards synced into
    /// leases, then read.
    pub(super) async fn activate(&self, spec: &StreamSpec) -> Result<(), WorkerError> {
        let stream = self.describe(spec).await?;
        let created = shard_sync::sync(&*self.kinesis, &stream, &self.store, &self.jitter)
            .await
            .map_err(|e| sync_error(&stream.stream, e))?;
        tracing::info!(stream = %spec.name, identifier = %stream.identifier, created, "reading stream");
        self.active.insert(&spec.name, stream);
        Ok(())
    }

    /// Brings the streams read in line with the list: listed ones not read yet are started
    /// (one that fails is logged and tried again at the next shard sync), unlisted ones stop.
    pub(super) async fn reconcile_streams(&self) -> Option<Stop> {
        let desired = self.desired.specs();
        for name in self.active.names() {
            if !desired.iter().any(|s| s.name == name) {
                self.active.remove(&name);
                tracing::info!(stream = %name, "stream removed from the list: its shards stop and their leases are released");
            }
        }
        let active = self.active.names();
        for spec in desired.iter().filter(|s| !active.contains(&s.name)) {
            match self.activate(spec).await {
                Ok(()) => {}
                Err(WorkerError::LeaseTableDeleted { source }) => return Some(table_gone(source)),
                Err(e) => {
                    tracing::error!(stream = %spec.name, error = %e, retry_in = ?self.config.shard_sync_interval, "cannot read the stream; the other streams go on, and it is tried again at the next shard sync");
                }
            }
        }
        None
    }

    /// The periodic shard sync of every stream read (and, for a multi-stream worker, another
    /// try at the listed streams not read).
    pub(super) async fn sync_streams(&self) -> Option<Stop> {
        // The streams read before this round: one started now was synced as it started.
        let before = self.active.all();
        if self.active.multi
            && let Some(stop) = self.reconcile_streams().await
        {
            return Some(stop);
        }
        let still: Vec<Arc<StreamContext>> = self.active.all();
        let streams: Vec<Arc<StreamContext>> = before
            .into_iter()
            .filter(|s| still.iter().any(|t| Arc::ptr_eq(s, t)))
            .collect();
        if streams.is_empty() {
            return None;
        }
        // One listing of the table serves every stream of the round.
        let existing = match self.store.list().await {
            Ok(existing) => existing,
            Err(e @ LeaseError::TableNotFound { .. }) => return Some(table_gone(e)),
            Err(e) => {
                tracing::warn!(error = %e, "periodic shard sync could not list the lease table; trying again next round");
                return None;
            }
        };
        for stream in streams {
            let synced = shard_sync::sync_listed(
                &*self.kinesis,
                &stream,
                &self.store,
                &self.jitter,
                &existing,
            )
            .await;
            let stop = match synced {
                Ok(_) => None,
                Err(SyncError::Kinesis(e)) if e.class() == Class::Fatal => {
                    match (e.is_not_found(), self.stream_is_gone(&stream.stream).await) {
                        (true, None) => {
                            tracing::warn!(stream = %stream.stream.as_str(), error = %e, "periodic shard sync failed; trying again next round");
                            None
                        }
                        (_, Some(gone)) => self.stream_failed(&stream, gone),
                        (false, None) => self.stream_failed(&stream, e),
                    }
                }
                Err(SyncError::Leases(e @ LeaseError::TableNotFound { .. })) => Some(table_gone(e)),
                Err(e) => {
                    tracing::warn!(stream = %stream.stream.as_str(), error = %e, "periodic shard sync failed; trying again next round");
                    None
                }
            };
            if stop.is_some() {
                return stop;
            }
        }
        None
    }

    /// Kinesis refused a stream for good (deleted, access denied): a single-stream worker
    /// stops gracefully with the error; a multi-stream worker stops reading that stream (its
    /// processors get `shutdown_requested`, its leases are released) and tries it again at each
    /// shard sync while it is listed.
    pub(super) fn stream_failed(&self, stream: &StreamContext, error: AwsError) -> Option<Stop> {
        let error = kinesis_error(&stream.stream, error);
        if !self.active.multi {
            return Some(Stop::Gracefully(error));
        }
        tracing::error!(stream = %stream.stream.as_str(), error = %error, retry_in = ?self.config.shard_sync_interval, "stopped reading the stream; the other streams go on, and it is tried again at the next shard sync");
        self.active.remove(stream.stream.as_str());
        None
    }

    /// Starts the consumers of leases just taken; a lease of a stream no longer read (removed
    /// while it was being taken) is released at once.
    pub(super) async fn start_consumers(
        &self,
        taken: Vec<Arc<HeldLease>>,
        coordinator: &LeaseCoordinator,
        consumers: &mut Consumers,
    ) {
        for held in taken {
            let stream = self.active.of(&*held.lease.lock().await);
            match stream {
                Some(stream) => consumers.start(held, stream),
                None => {
                    tracing::info!(lease = %held.key, "lease of a stream no longer read: released");
                    coordinator.release(&held).await;
                }
            }
        }
    }

    /// Deletes the leases of streams no longer listed, by the configured policy.
    pub(super) async fn delete_former_stream_leases(&self, former: &mut FormerLeases) {
        let FormerStreamLeases::DeleteAfter(wait) = self.config.former_stream_leases else {
            return;
        };
        if !self.active.multi {
            return;
        }
        let leases = match self.store.list().await {
            Ok(leases) => leases,
            Err(e) => {
                return tracing::warn!(error = %e, "former streams' lease cleanup could not list leases");
            }
        };
        let active: Vec<Arc<str>> = self
            .active
            .all()
            .iter()
            .map(|s| s.identifier.clone())
            .collect();
        let wait = wait.max(self.config.failover_time);
        let now = tokio::time::Instant::now();
        for key in former.deletable(&leases, &self.desired.specs(), &active, wait, now) {
            match self.store.delete(&key).await {
                Ok(()) => {
                    tracing::info!(lease = %key, unchanged_for = ?wait, "deleted the lease of a stream no longer listed")
                }
                Err(e) => {
                    tracing::warn!(lease = %key, error = %e, "deleting a former stream's lease failed; tried again at the next cleanup")
                }
            }
        }
    }
}

/// A Kinesis error as the worker reports it, naming the stream.
pub(super) fn kinesis_error(stream: &StreamRef, e: AwsError) -> WorkerError {
    let stream = stream.as_str().to_owned();
    if e.is_not_found() {
        WorkerError::StreamNotFound { stream, source: e }
    } else {
        WorkerError::Kinesis { stream, source: e }
    }
}

pub(super) fn sync_error(stream: &StreamRef, e: SyncError) -> WorkerError {
    match e {
        SyncError::Kinesis(e) => kinesis_error(stream, e),
        SyncError::Leases(e @ LeaseError::TableNotFound { .. }) => {
            WorkerError::LeaseTableDeleted { source: e }
        }
        SyncError::Leases(e) => WorkerError::Leases(e),
    }
}
