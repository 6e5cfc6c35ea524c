//! What the application implements: one [`RecordProcessor`] per shard, made by a
//! [`RecordProcessorFactory`].
//!
//! Contract (as the Java KCL's): `initialize` once, then `process_records` for every batch in
//! (sequence, sub-sequence) order, then exactly one of
//! - `lease_lost`: another worker holds the shard now; checkpointing is no longer possible;
//! - `shard_ended`: the shard was read to its end; the processor MUST checkpoint, or the shard's
//!   children never start;
//! - `shutdown_requested`: the worker is shutting down gracefully; the processor may checkpoint.
//!
//! A processor stopped before its `initialize` ran (its shard was still waiting on its parents,
//! or the lease was lost while the first iterator was being fetched) gets none of these calls.
//!
//! Failures: when `initialize`, `process_records` or `shard_ended` returns an error or panics, the
//! error is logged with the shard, the processor is dropped (no further calls), and the shard
//! restarts from its last checkpoint with a new processor after a back-off that grows while the
//! shard keeps failing (at-least-once: records after the checkpoint are delivered again). The
//! lease stays with this worker meanwhile. An error from `lease_lost` or `shutdown_requested` is
//! logged; the shard stops either way.

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use kinesis_format::{ExtendedSequenceNumber, SequenceNumber};

use crate::checkpoint::Checkpointer;
use crate::leases::CheckpointPosition;

/// One user record as the processor receives it (deaggregated when it came in an aggregate).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// The user record's partition key.
    pub partition_key: Arc<str>,
    /// Its explicit hash key, when it came in an aggregate that carried one.
    pub explicit_hash_key: Option<Arc<str>>,
    /// The data.
    pub data: Bytes,
    /// The Kinesis record's sequence number.
    pub sequence_number: SequenceNumber,
    /// The index in the aggregate (0 for a record that was not aggregated).
    pub sub_sequence_number: u64,
    /// When Kinesis received the Kinesis record.
    pub approximate_arrival: Option<SystemTime>,
    /// Whether it came out of an aggregate.
    pub aggregated: bool,
}

impl ConsumerRecord {
    /// Its position in the shard.
    pub fn position(&self) -> ExtendedSequenceNumber {
        ExtendedSequenceNumber::new(self.sequence_number.clone(), self.sub_sequence_number)
    }
}

/// Given to `initialize`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct InitializeInput {
    /// The shard's stream: its name or ARN as given to the worker.
    pub stream: String,
    /// The shard.
    pub shard_id: String,
    /// Where processing starts: the lease's checkpoint.
    pub checkpoint: CheckpointPosition,
}

/// Given to `process_records`.
#[derive(Debug)]
#[non_exhaustive]
pub struct ProcessRecordsInput<'a> {
    /// The user records, in order.
    pub records: Vec<ConsumerRecord>,
    /// How far behind the tip of the shard this batch is.
    pub millis_behind_latest: Option<i64>,
    /// For checkpointing; clone it to checkpoint later from another task, after an
    /// asynchronous acknowledgement (see [`Checkpointer`]).
    pub checkpointer: &'a Checkpointer,
}

/// What a processor's call returns: an error asks for the shard to restart from its last
/// checkpoint (see the module documentation).
pub type ProcessorResult = Result<(), ProcessorError>;

/// Any error a processor wants to report.
pub type ProcessorError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The application's per-shard logic.
#[async_trait]
pub trait RecordProcessor: Send + 'static {
    /// Called once before any records.
    async fn initialize(&mut self, input: InitializeInput) -> ProcessorResult {
        let _ = input;
        Ok(())
    }

    /// A batch of records, in (sequence, sub-sequence) order.
    async fn process_records(&mut self, input: ProcessRecordsInput<'_>) -> ProcessorResult;

    /// This worker lost the lease: stop; checkpoints would fail.
    async fn lease_lost(&mut self) -> ProcessorResult {
        Ok(())
    }

    /// The shard has no more records: checkpoint (`checkpointer.checkpoint()`), or the shard's
    /// children never start.
    async fn shard_ended(&mut self, checkpointer: &Checkpointer) -> ProcessorResult;

    /// The worker is shutting down gracefully: a last chance to checkpoint.
    async fn shutdown_requested(&mut self, checkpointer: &Checkpointer) -> ProcessorResult {
        let _ = checkpointer;
        Ok(())
    }
}

/// Makes a processor for each shard this worker starts processing.
pub trait RecordProcessorFactory: Send + Sync + 'static {
    /// A processor for `shard_id`.
    fn create(&self, shard_id: &str) -> Box<dyn RecordProcessor>;

    /// A processor for `shard_id` of `stream` (its name or ARN as given to the worker): a
    /// multi-stream worker's factory may make a different processor per stream. Default:
    /// [`create`](Self::create).
    fn create_for(&self, stream: &str, shard_id: &str) -> Box<dyn RecordProcessor> {
        let _ = stream;
        self.create(shard_id)
    }
}

impl<F> RecordProcessorFactory for F
where
    F: Fn(&str) -> Box<dyn RecordProcessor> + Send + Sync + 'static,
{
    fn create(&self, shard_id: &str) -> Box<dyn RecordProcessor> {
        self(shard_id)
    }
}
