//! The task that processes one leased shard through its states.

use std::sync::Arc;
use std::time::Duration;

use kinesis_api::{ChildShard, IteratorStart, Kinesis};
use kinesis_format::ExtendedSequenceNumber;
use kinesis_retry::{AwsError, Class};
use tokio_util::sync::CancellationToken;

use super::state::ShardState;
use crate::checkpoint::{Checkpointer, HeldLease};
use crate::config::{InitialPosition, WorkerConfig};
use crate::leases::{CheckpointPosition, LeaseStore};
use crate::prefetch::{PrefetchLimits, Prefetched, Prefetcher};
use crate::processor::{
    InitializeInput, ProcessRecordsInput, ProcessorError, ProcessorResult, RecordProcessor,
};
use crate::retrieval::{Skipped, shard_iterator, to_user_records};
use crate::shard_sync::create_child_leases;
use kinesis_api::StreamRef;

/// How a shard consumer ended.
#[derive(Debug)]
pub(crate) enum ShardOutcome {
    /// Processed to its end and checkpointed SHARD_END.
    Finished,
    /// The lease went to another worker.
    LeaseLost,
    /// Stopped for a graceful shutdown (the processor had its `shutdown_requested`).
    ShutDown,
    /// The processor returned an error: the shard restarts from its checkpoint after a back-off.
    /// (A panic reaches the worker as the task's failure instead.)
    ProcessorFailed {
        call: &'static str,
        error: ProcessorError,
        /// Whether some batch was processed successfully first (resets the back-off).
        progressed: bool,
    },
    /// Kinesis answered with an error that retrying cannot fix (the shard or stream is gone,
    /// access denied...): the worker decides what it means.
    KinesisFatal(AwsError),
}

pub(crate) struct ShardConsumer {
    pub(crate) held: Arc<HeldLease>,
    pub(crate) store: Arc<dyn LeaseStore>,
    pub(crate) kinesis: Arc<dyn Kinesis>,
    pub(crate) stream: StreamRef,
    /// Where back-off jitter comes from.
    pub(crate) jitter: Arc<crate::jitter::Jitter>,
    /// The stream's identity, written on the child leases this consumer creates.
    pub(crate) stream_identifier: Arc<str>,
    pub(crate) config: Arc<WorkerConfig>,
    /// Cancelled when the worker shuts down gracefully.
    pub(crate) shutdown: CancellationToken,
}

/// What interrupted a wait.
enum Interrupt {
    Lost,
    Shutdown,
}

impl ShardConsumer {
    pub(crate) async fn run(self, mut processor: Box<dyn RecordProcessor>) -> ShardOutcome {
        let processor = &mut *processor;
        let shard_id = self.held.key.clone();
        let checkpointer = Checkpointer::new(self.held.clone(), self.store.clone());
        let mut state = ShardState::WaitingOnParents;
        let mut resume_after: Option<ExtendedSequenceNumber> = None;
        let mut prefetcher: Option<Prefetcher> = None;
        let mut initialized = false;
        let mut progressed = false;
        let mut children: Vec<ChildShard> = Vec::new();
        loop {
            tracing::trace!(shard = %shard_id, ?state, "shard consumer state");
            state = match state {
                ShardState::WaitingOnParents => match self.wait_for_parents().await {
                    Ok(()) => ShardState::Initializing,
                    Err(i) => self.interrupted(i),
                },
                ShardState::Initializing => {
                    let lease = self.held.lease.lock().await.clone();
                    if lease.is_finished() {
                        return ShardOutcome::Finished;
                    }
                    let start = match &lease.checkpoint {
                        CheckpointPosition::TrimHorizon => IteratorStart::TrimHorizon,
                        CheckpointPosition::Latest => IteratorStart::Latest,
                        CheckpointPosition::AtTimestamp => match self.config.initial_position {
                            InitialPosition::AtTimestamp(at) => IteratorStart::AtTimestamp(at),
                            _ => IteratorStart::TrimHorizon,
                        },
                        CheckpointPosition::Sequence {
                            sequence,
                            sub_sequence,
                        } => {
                            // Read the checkpointed record again and skip up to its sub-record.
                            if !initialized {
                                resume_after = Some(ExtendedSequenceNumber::new(
                                    sequence.clone(),
                                    *sub_sequence,
                                ));
                            }
                            IteratorStart::AtSequence(sequence.to_string())
                        }
                        CheckpointPosition::ShardEnd => return ShardOutcome::Finished,
                    };
                    // Restarting reads (the fetcher stopped): continue after what was delivered.
                    let start = match &resume_after {
                        Some(p) if initialized => IteratorStart::AtSequence(p.sequence.to_string()),
                        _ => start,
                    };
                    if !initialized {
                        tracing::info!(shard = %shard_id, start = %lease.checkpoint, "starting to process shard");
                    }
                    let iterator = tokio::select! {
                        biased;
                        () = self.held.lost.cancelled() => Err(Interrupt::Lost),
                        () = self.shutdown.cancelled() => Err(Interrupt::Shutdown),
                        it = shard_iterator(&*self.kinesis, &self.stream, &shard_id, &start, &self.jitter) => Ok(it),
                    };
                    match iterator {
                        Err(i) => self.interrupted(i),
                        Ok(Ok(it)) => {
                            prefetcher = Some(Prefetcher::start(
                                self.kinesis.clone(),
                                self.stream.clone(),
                                shard_id.clone(),
                                it,
                                self.limits(),
                                self.jitter.clone(),
                            ));
                            if !initialized {
                                initialized = true;
                                let input = InitializeInput {
                                    shard_id: shard_id.clone(),
                                    checkpoint: lease.checkpoint.clone(),
                                };
                                if let Err(error) = processor.initialize(input).await {
                                    return ShardOutcome::ProcessorFailed {
                                        call: "initialize",
                                        error,
                                        progressed,
                                    };
                                }
                            }
                            ShardState::Processing
                        }
                        Ok(Err(e)) if e.class() == Class::Fatal => {
                            return self.fatal(processor, initialized, &checkpointer, e).await;
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(shard = %shard_id, error = %e, "cannot start reading the shard; retrying");
                            match self.pause(self.config.idle_time_between_reads).await {
                                Ok(()) => ShardState::Initializing,
                                Err(i) => self.interrupted(i),
                            }
                        }
                    }
                }
                ShardState::Processing => {
                    let Some(fetcher) = prefetcher.as_mut() else {
                        continue;
                    };
                    let batch = tokio::select! {
                        biased;
                        () = self.held.lost.cancelled() => None,
                        () = self.shutdown.cancelled() => None,
                        batch = fetcher.next() => Some(batch),
                    };
                    match batch {
                        None => self.interrupted(if self.held.lost.is_cancelled() {
                            Interrupt::Lost
                        } else {
                            Interrupt::Shutdown
                        }),
                        // The fetcher stopped before the shard's end: read again from where we are.
                        Some(None) => {
                            prefetcher = None;
                            ShardState::Initializing
                        }
                        Some(Some(Err(e))) => {
                            return self.fatal(processor, initialized, &checkpointer, e).await;
                        }
                        Some(Some(Ok(mut batch))) => {
                            let delivered = self
                                .deliver(
                                    processor,
                                    &shard_id,
                                    &mut batch,
                                    &mut resume_after,
                                    &checkpointer,
                                )
                                .await;
                            match delivered {
                                Ok(true) => progressed = true,
                                Ok(false) => {}
                                Err(error) => {
                                    return ShardOutcome::ProcessorFailed {
                                        call: "process_records",
                                        error,
                                        progressed,
                                    };
                                }
                            }
                            match batch.end {
                                Some(kids) => {
                                    prefetcher = None;
                                    children = kids;
                                    ShardState::ShardEnded
                                }
                                None => ShardState::Processing,
                            }
                        }
                    }
                }
                ShardState::ShardEnded => {
                    match self
                        .end_shard(processor, &shard_id, &children, &checkpointer)
                        .await
                    {
                        Ok(Ok(())) => return ShardOutcome::Finished,
                        Ok(Err(error)) => {
                            return ShardOutcome::ProcessorFailed {
                                call: "shard_ended",
                                error,
                                progressed,
                            };
                        }
                        Err(i) => self.interrupted(i),
                    }
                }
                ShardState::LeaseLost => {
                    if let Err(e) = processor.lease_lost().await {
                        tracing::warn!(shard = %shard_id, error = %e, "processor's lease_lost returned an error");
                    }
                    return ShardOutcome::LeaseLost;
                }
                ShardState::ShutdownRequested => {
                    if let Err(e) = processor.shutdown_requested(&checkpointer).await {
                        tracing::warn!(shard = %shard_id, error = %e, "processor's shutdown_requested returned an error");
                    }
                    return ShardOutcome::ShutDown;
                }
                ShardState::ShutDown => return ShardOutcome::ShutDown,
            };
        }
    }

    /// Stops on a Kinesis error no retry can fix: an initialised processor gets
    /// `shutdown_requested` (its chance to checkpoint) first.
    async fn fatal(
        &self,
        processor: &mut dyn RecordProcessor,
        initialized: bool,
        checkpointer: &Checkpointer,
        error: AwsError,
    ) -> ShardOutcome {
        if initialized && let Err(e) = processor.shutdown_requested(checkpointer).await {
            tracing::warn!(shard = %self.held.key, error = %e, "processor's shutdown_requested returned an error");
        }
        ShardOutcome::KinesisFatal(error)
    }

    fn limits(&self) -> PrefetchLimits {
        PrefetchLimits {
            max_records: self.config.prefetch_max_records,
            max_bytes: self.config.prefetch_max_bytes,
            records_per_call: self.config.max_records,
            idle_time: self.config.idle_time_between_reads,
        }
    }

    fn interrupted(&self, i: Interrupt) -> ShardState {
        match i {
            Interrupt::Lost => ShardState::LeaseLost,
            Interrupt::Shutdown => ShardState::ShutdownRequested,
        }
    }

    /// Waits, unless the lease is lost or the worker shuts down first.
    async fn pause(&self, wait: Duration) -> Result<(), Interrupt> {
        tokio::select! {
            biased;
            () = self.held.lost.cancelled() => Err(Interrupt::Lost),
            () = self.shutdown.cancelled() => Err(Interrupt::Shutdown),
            () = tokio::time::sleep(wait) => Ok(()),
        }
    }

    fn check(&self) -> Result<(), Interrupt> {
        if self.held.lost.is_cancelled() {
            Err(Interrupt::Lost)
        } else if self.shutdown.is_cancelled() {
            Err(Interrupt::Shutdown)
        } else {
            Ok(())
        }
    }

    /// A child starts only when every parent is at SHARD_END or has no lease any more.
    async fn wait_for_parents(&self) -> Result<(), Interrupt> {
        let parents = self.held.lease.lock().await.parent_shard_ids.clone();
        loop {
            self.check()?;
            let mut blocking = Vec::new();
            for parent in &parents {
                match self.store.get(parent).await {
                    Ok(Some(lease)) if !lease.is_finished() => {
                        blocking.push(format!("{parent} at {}", lease.checkpoint))
                    }
                    Ok(_) => {}
                    Err(e) => blocking.push(format!("{parent} unreadable ({e})")),
                }
            }
            if blocking.is_empty() {
                return Ok(());
            }
            tracing::info!(shard = %self.held.key, waiting_for = ?blocking, "child shard waits until its parents reach SHARD_END");
            self.pause(self.config.parent_poll_interval).await?;
        }
    }

    /// Hands one prefetched batch to the processor (deaggregated, range-filtered, and without
    /// what was already delivered or checkpointed). `Ok(true)` when the processor got records and
    /// returned success.
    async fn deliver(
        &self,
        processor: &mut dyn RecordProcessor,
        shard_id: &str,
        batch: &mut Prefetched,
        resume_after: &mut Option<ExtendedSequenceNumber>,
        checkpointer: &Checkpointer,
    ) -> Result<bool, ProcessorError> {
        let range = self.held.lease.lock().await.hash_key_range;
        let mut user = Vec::new();
        let mut skipped = Skipped::default();
        // The records move out (their data becomes the user records' buffers); the batch keeps
        // its read-ahead capacity until it is dropped after processing.
        to_user_records(
            std::mem::take(&mut batch.records),
            range,
            resume_after.as_ref(),
            &mut user,
            &mut skipped,
        );
        if skipped.out_of_range > 0 {
            tracing::debug!(shard = %shard_id, count = skipped.out_of_range, "sub-records outside the shard's hash key range dropped");
        }
        if let Some(last) = user.last() {
            let position = last.position();
            checkpointer.delivered(position.clone());
            *resume_after = Some(position);
            processor
                .process_records(ProcessRecordsInput {
                    records: user,
                    millis_behind_latest: batch.millis_behind_latest,
                    checkpointer,
                })
                .await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Creates the children's leases, then asks the processor to checkpoint SHARD_END, as often as
    /// it takes: without that checkpoint the children never start. The inner result is the
    /// processor's own failure.
    async fn end_shard(
        &self,
        processor: &mut dyn RecordProcessor,
        shard_id: &str,
        children: &[ChildShard],
        checkpointer: &Checkpointer,
    ) -> Result<ProcessorResult, Interrupt> {
        checkpointer.reached_shard_end();
        let child_ids: Vec<String> = children.iter().map(|c| c.id.clone()).collect();
        loop {
            self.check()?;
            if let Err(e) =
                create_child_leases(&*self.store, children, &self.stream_identifier).await
            {
                tracing::warn!(shard = %shard_id, error = %e, "creating child leases failed; retrying");
                self.pause(self.config.parent_poll_interval).await?;
                continue;
            }
            if !child_ids.is_empty() {
                let lease = self.held.lease.lock().await.clone();
                if let Err(e) = self.store.set_child_shards(&lease, &child_ids).await {
                    tracing::warn!(shard = %shard_id, error = %e, "recording the child shards on the lease failed (cleanup of this lease waits)");
                }
            }
            if let Err(e) = processor.shard_ended(checkpointer).await {
                return Ok(Err(e));
            }
            if self.held.lease.lock().await.is_finished() {
                return Ok(Ok(()));
            }
            tracing::error!(
                shard = %shard_id,
                children = ?child_ids,
                "shard ended but its processor did not checkpoint SHARD_END in shard_ended: the child shards will not start until it does (call checkpointer.checkpoint() in shard_ended)"
            );
            self.pause(self.config.parent_poll_interval).await?;
        }
    }
}
