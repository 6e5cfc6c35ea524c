//! The task that processes one leased shard through its states.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kinesis_api::{ChildShard, IteratorStart, Kinesis};
use kinesis_format::{ExtendedSequenceNumber, HashKeyRange};
use kinesis_retry::Class;
use tokio_util::sync::CancellationToken;

use super::slow_call::{Watched, watch};
use super::state::{Event, Reading, ShardOutcome, ShardState, Step, Stop, transition};
use crate::checkpoint::Checkpointer;
use crate::config::{InitialPosition, WorkerConfig};
use crate::held::HeldLease;
use crate::leases::{CheckpointPosition, LeaseStore};
use crate::prefetch::{PrefetchLimits, Prefetched, Prefetcher};
use crate::processor::{InitializeInput, ProcessRecordsInput, ProcessorError, RecordProcessor};
use crate::retrieval::{Skipped, shard_iterator, to_user_records};
use crate::shard_sync::create_child_leases;
use crate::streams::StreamContext;

pub(crate) struct ShardConsumer {
    pub(crate) held: Arc<HeldLease>,
    pub(crate) store: Arc<dyn LeaseStore>,
    pub(crate) kinesis: Arc<dyn Kinesis>,
    /// The shard's stream: where to read, how its leases are named.
    pub(crate) stream: Arc<StreamContext>,
    /// Where back-off jitter comes from.
    pub(crate) jitter: Arc<crate::jitter::Jitter>,
    pub(crate) config: Arc<WorkerConfig>,
    /// Cancelled when the worker shuts down gracefully.
    pub(crate) shutdown: CancellationToken,
    /// Where this consumer reports its phase and progress.
    pub(crate) status: Arc<crate::worker::Board>,
}

/// What interrupted a wait.
enum Interrupt {
    Lost,
    Shutdown,
}

impl Interrupt {
    fn event(self) -> Event {
        match self {
            Interrupt::Lost => Event::LeaseLost,
            Interrupt::Shutdown => Event::ShutdownRequested,
        }
    }
}

impl ShardConsumer {
    /// Drives the shard through its states: each state's I/O happens here and ends in an
    /// [`Event`]; [`transition`] decides what comes next.
    pub(crate) async fn run(self, mut processor: Box<dyn RecordProcessor>) -> ShardOutcome {
        let processor = &mut *processor;
        let checkpointer = Checkpointer::new(self.held.clone(), self.store.clone())
            .in_stream(self.stream.stream.as_str())
            .stopping_with(self.shutdown.clone());
        let mut state = ShardState::WaitingOnParents;
        let mut fetcher: Option<Prefetcher> = None;
        loop {
            tracing::trace!(shard = %self.held.key, ?state, "shard consumer state");
            self.status.shard_phase(&self.held.key, phase(&state));
            let event = match &state {
                ShardState::WaitingOnParents => match self.wait_for_parents().await {
                    Ok(()) => Event::ParentsDone,
                    Err(i) => i.event(),
                },
                ShardState::Initializing(reading) => {
                    self.start_reading(processor, reading, &mut fetcher).await
                }
                ShardState::Processing(reading) => {
                    self.process_next(processor, reading, &mut fetcher, &checkpointer)
                        .await
                }
                ShardState::ShardEnded { children, .. } => {
                    self.end_shard(processor, children, &checkpointer).await
                }
                ShardState::Stopping(stop) => {
                    let (call, result) = match stop {
                        Stop::LeaseLost => (
                            "lease_lost",
                            self.call("lease_lost", processor.lease_lost()).await,
                        ),
                        Stop::Shutdown | Stop::Fatal(_) => (
                            "shutdown_requested",
                            self.call(
                                "shutdown_requested",
                                processor.shutdown_requested(&checkpointer),
                            )
                            .await,
                        ),
                    };
                    if let Err(e) = result {
                        tracing::warn!(shard = %self.held.key, error = %e, "processor's {call} returned an error");
                    }
                    Event::Notified
                }
            };
            state = match transition(state, event) {
                Step::Next(next) => next,
                Step::Done(outcome) => return outcome,
            };
            if !matches!(state, ShardState::Processing(_)) {
                // Reads restart from a fresh iterator whenever processing resumes.
                fetcher = None;
            }
        }
    }

    /// `Initializing`: an iterator at the checkpoint (or after what was delivered, when the
    /// reads restart), a fetcher on it, and the processor's `initialize` the first time.
    async fn start_reading(
        &self,
        processor: &mut dyn RecordProcessor,
        reading: &Reading,
        fetcher: &mut Option<Prefetcher>,
    ) -> Event {
        let shard_id = &self.held.shard_id;
        let lease = self.held.lease.lock().await.clone();
        if lease.is_finished() {
            return Event::AlreadyFinished;
        }
        let mut checkpoint = None;
        let start = match &lease.checkpoint {
            CheckpointPosition::TrimHorizon => IteratorStart::TrimHorizon,
            CheckpointPosition::Latest => IteratorStart::Latest,
            CheckpointPosition::AtTimestamp => match self.stream.initial {
                InitialPosition::AtTimestamp(at) => IteratorStart::AtTimestamp(at),
                _ => IteratorStart::TrimHorizon,
            },
            CheckpointPosition::Sequence {
                sequence,
                sub_sequence,
            } => {
                // Read the checkpointed record again and skip up to its sub-record.
                checkpoint = Some(ExtendedSequenceNumber::new(sequence.clone(), *sub_sequence));
                IteratorStart::AtSequence(sequence.to_string())
            }
            CheckpointPosition::ShardEnd => return Event::AlreadyFinished,
        };
        let start = match &reading.after {
            Some(p) if reading.initialized => IteratorStart::AtSequence(p.sequence.to_string()),
            _ => start,
        };
        if !reading.initialized {
            tracing::info!(shard = %shard_id, start = %lease.checkpoint, "starting to process shard");
        }
        if let Some(consumer) = &self.stream.fan_out {
            let source = crate::fan_out::Source {
                kinesis: self.kinesis.clone(),
                stream: self.stream.stream.clone(),
                consumer_arn: consumer.clone(),
                closed: self.stream.closed.clone(),
            };
            *fetcher = Some(Prefetcher::start_fan_out(
                source,
                shard_id.clone(),
                start,
                self.limits(),
                self.jitter.clone(),
            ));
            return self
                .initialize(processor, reading, &lease, checkpoint)
                .await;
        }
        let iterator = tokio::select! {
            biased;
            () = self.held.lost.cancelled() => return Event::LeaseLost,
            () = self.shutdown.cancelled() => return Event::ShutdownRequested,
            it = shard_iterator(&*self.kinesis, &self.stream.stream, shard_id, &start, &self.jitter) => it,
        };
        match iterator {
            Ok(it) => {
                *fetcher = Some(Prefetcher::start(
                    self.kinesis.clone(),
                    self.stream.stream.clone(),
                    shard_id.clone(),
                    it,
                    self.limits(),
                    self.jitter.clone(),
                ));
                self.initialize(processor, reading, &lease, checkpoint)
                    .await
            }
            Err(e) if e.class() == Class::Fatal => Event::KinesisFatal(e),
            Err(e) => {
                tracing::warn!(shard = %shard_id, error = %e, "cannot start reading the shard; retrying");
                match self.pause(self.config.idle_time_between_reads).await {
                    Ok(()) => Event::StartFailed,
                    Err(i) => i.event(),
                }
            }
        }
    }

    /// The processor's `initialize` the first time reads start.
    async fn initialize(
        &self,
        processor: &mut dyn RecordProcessor,
        reading: &Reading,
        lease: &crate::leases::Lease,
        checkpoint: Option<ExtendedSequenceNumber>,
    ) -> Event {
        if !reading.initialized {
            let input = InitializeInput {
                stream: self.stream.stream.as_str().to_owned(),
                shard_id: self.held.shard_id.clone(),
                checkpoint: lease.checkpoint.clone(),
            };
            if let Err(error) = self.call("initialize", processor.initialize(input)).await {
                return Event::ProcessorFailed {
                    call: "initialize",
                    error,
                };
            }
        }
        Event::ReadsStarted { checkpoint }
    }

    /// `Processing`: the next prefetched batch, handed to the processor.
    async fn process_next(
        &self,
        processor: &mut dyn RecordProcessor,
        reading: &Reading,
        fetcher: &mut Option<Prefetcher>,
        checkpointer: &Checkpointer,
    ) -> Event {
        let Some(f) = fetcher.as_mut() else {
            return Event::ReadsStopped;
        };
        let batch = tokio::select! {
            biased;
            () = self.held.lost.cancelled() => return Event::LeaseLost,
            () = self.shutdown.cancelled() => return Event::ShutdownRequested,
            batch = f.next() => batch,
        };
        match batch {
            // The fetcher stopped before the shard's end: read again from where we are.
            None => Event::ReadsStopped,
            Some(Err(e)) => Event::KinesisFatal(e),
            Some(Ok(mut batch)) => {
                // The lease lock is where a renewal in flight finishes: a renewal that found the
                // lease taken has marked it lost by the time we hold it, and no batch starts
                // after that.
                let range = self.held.lease.lock().await.hash_key_range;
                if let Err(i) = self.check() {
                    return i.event();
                }
                match self
                    .deliver(
                        processor,
                        &mut batch,
                        range,
                        reading.after.as_ref(),
                        checkpointer,
                    )
                    .await
                {
                    Ok(last) => Event::Delivered {
                        last,
                        end: batch.end.take(),
                    },
                    Err(error) => Event::ProcessorFailed {
                        call: "process_records",
                        error,
                    },
                }
            }
        }
    }

    /// Awaits a call into the processor, warning while it runs long (see `slow_call`).
    async fn call<T>(&self, call: &'static str, future: impl Future<Output = T>) -> T {
        let what = Watched {
            stream: self.stream.stream.as_str(),
            shard: &self.held.key,
            call,
        };
        watch(what, self.config.slow_call_warning, future).await
    }

    fn limits(&self) -> PrefetchLimits {
        PrefetchLimits {
            max_records: self.config.prefetch_max_records,
            max_bytes: self.config.prefetch_max_bytes,
            records_per_call: self.config.max_records,
            idle_time: self.config.idle_time_between_reads,
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
        let parents: Vec<String> = {
            let lease = self.held.lease.lock().await;
            (lease.parent_shard_ids.iter())
                .map(|p| lease.key_of_shard(p))
                .collect()
        };
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
    /// what was already delivered or checkpointed). `Ok(Some(last))` when the processor got
    /// records up to `last` and returned success; `Ok(None)` when nothing was left to hand over.
    async fn deliver(
        &self,
        processor: &mut dyn RecordProcessor,
        batch: &mut Prefetched,
        range: Option<HashKeyRange>,
        after: Option<&ExtendedSequenceNumber>,
        checkpointer: &Checkpointer,
    ) -> Result<Option<ExtendedSequenceNumber>, ProcessorError> {
        let mut user = Vec::new();
        let mut skipped = Skipped::default();
        // The records move out (their data becomes the user records' buffers); the batch keeps
        // its read-ahead capacity until it is dropped after processing.
        to_user_records(
            std::mem::take(&mut batch.records),
            range,
            after,
            &mut user,
            &mut skipped,
        );
        if skipped.out_of_range > 0 {
            tracing::debug!(shard = %self.held.key, count = skipped.out_of_range, "sub-records outside the shard's hash key range dropped");
        }
        let Some(last) = user.last().map(|r| r.position()) else {
            return Ok(None);
        };
        checkpointer.delivered(last.clone());
        let (count, bytes) = (user.len(), user.iter().map(|r| r.data.len()).sum());
        let started = tokio::time::Instant::now();
        let input = ProcessRecordsInput {
            records: user,
            millis_behind_latest: batch.millis_behind_latest,
            checkpointer,
        };
        let result = self
            .call("process_records", processor.process_records(input))
            .await;
        crate::kcl_metrics::processed(
            self.stream.stream.as_str(),
            &self.held.shard_id,
            count,
            bytes,
            batch.millis_behind_latest,
            started.elapsed(),
        );
        self.held
            .read_bytes
            .fetch_add(bytes as u64, std::sync::atomic::Ordering::Relaxed);
        result?;
        self.status
            .batch(&self.held.key, count, batch.millis_behind_latest);
        Ok(Some(last))
    }

    /// `ShardEnded`: creates the children's leases, then asks the processor to checkpoint
    /// SHARD_END; without that checkpoint the children never start, so a processor that does not
    /// is asked again after a pause.
    async fn end_shard(
        &self,
        processor: &mut dyn RecordProcessor,
        children: &[ChildShard],
        checkpointer: &Checkpointer,
    ) -> Event {
        let shard_id = &self.held.key;
        if let Err(i) = self.check() {
            return i.event();
        }
        checkpointer.reached_shard_end();
        let child_ids: Vec<String> = children.iter().map(|c| c.id.clone()).collect();
        if let Err(e) = create_child_leases(&*self.store, children, &self.stream).await {
            tracing::warn!(shard = %shard_id, error = %e, "creating child leases failed; retrying");
            return self.pause_then(Event::EndNotCheckpointed).await;
        }
        if !child_ids.is_empty() {
            let lease = self.held.lease.lock().await.clone();
            if let Err(e) = self.store.set_child_shards(&lease, &child_ids).await {
                tracing::warn!(shard = %shard_id, error = %e, "recording the child shards on the lease failed (cleanup of this lease waits)");
            }
        }
        if let Err(error) = self
            .call("shard_ended", processor.shard_ended(checkpointer))
            .await
        {
            return Event::ProcessorFailed {
                call: "shard_ended",
                error,
            };
        }
        if self.held.lease.lock().await.is_finished() {
            return Event::EndCheckpointed;
        }
        tracing::error!(
            shard = %shard_id,
            children = ?child_ids,
            "shard ended but its processor did not checkpoint SHARD_END in shard_ended: the child shards will not start until it does (call checkpointer.checkpoint() in shard_ended)"
        );
        self.pause_then(Event::EndNotCheckpointed).await
    }

    /// `event` after the parent poll interval, or what interrupted the wait.
    async fn pause_then(&self, event: Event) -> Event {
        match self.pause(self.config.parent_poll_interval).await {
            Ok(()) => event,
            Err(i) => i.event(),
        }
    }
}

/// What the status board shows for a state.
fn phase(state: &ShardState) -> crate::worker::ShardPhase {
    use crate::worker::ShardPhase;
    match state {
        ShardState::WaitingOnParents => ShardPhase::WaitingOnParents,
        ShardState::Initializing(_) => ShardPhase::Initializing,
        ShardState::Processing(_) => ShardPhase::Processing,
        ShardState::ShardEnded { .. } => ShardPhase::ShardEnded,
        ShardState::Stopping(_) => ShardPhase::Stopping,
    }
}
