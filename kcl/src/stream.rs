//! [`RecordStream`]: the records of every shard this worker holds, as a [`futures_core::Stream`]
//! of batches, on the same leases and lifecycle as processors (so it scales across processes
//! the same way).
//!
//! Each held shard gets a processor that forwards its batches into one bounded channel; a full
//! channel holds the shard's reads back. Each [`Batch`] carries a clone of its shard's
//! [`Checkpointer`]: checkpoint it once the batch is really done. At a shard's end the stream
//! yields a batch with no records and `shard_ended` set: checkpoint it (SHARD_END) so that the
//! shard's children start; until then they wait, which keeps every key's parent records before
//! its child records.

use std::pin::Pin;
use std::task::{Context, Poll};

use async_trait::async_trait;
use kinesis_format::ExtendedSequenceNumber;
use tokio::sync::{mpsc, oneshot};

use crate::checkpoint::{CheckpointError, Checkpointer};
use crate::processor::{ConsumerRecord, ProcessRecordsInput, ProcessorResult, RecordProcessor};

/// One shard's batch of user records, in order, or the end of a shard.
#[derive(Debug)]
#[non_exhaustive]
pub struct Batch {
    /// The shard's stream (its name or ARN as given to the worker).
    pub stream: String,
    /// The shard the records come from.
    pub shard_id: String,
    /// Its user records, in (sequence, sub-sequence) order; empty when `shard_ended`.
    pub records: Vec<ConsumerRecord>,
    /// How far behind the tip of the shard this batch was.
    pub millis_behind_latest: Option<i64>,
    /// The shard was read to its end and every batch of it came before this one: checkpoint
    /// this batch (SHARD_END) so that its children start.
    pub shard_ended: bool,
    checkpointer: Checkpointer,
    last: Option<ExtendedSequenceNumber>,
    ended: Option<oneshot::Sender<()>>,
}

impl Batch {
    /// The shard's checkpointer (a clone: keep it to checkpoint later, from any task).
    pub fn checkpointer(&self) -> &Checkpointer {
        &self.checkpointer
    }

    /// Checkpoints this batch's last record or, for a shard's end, SHARD_END. Refused with
    /// [`CheckpointError::LeaseLost`] once this worker no longer holds the shard (another worker
    /// goes on from the last stored checkpoint).
    pub async fn checkpoint(&mut self) -> Result<(), CheckpointError> {
        if self.shard_ended {
            self.checkpointer.checkpoint().await?;
            if let Some(ended) = self.ended.take() {
                let _ = ended.send(());
            }
            return Ok(());
        }
        match &self.last {
            Some(last) => {
                self.checkpointer
                    .checkpoint_at(&last.sequence, last.sub_sequence)
                    .await
            }
            None => Ok(()),
        }
    }
}

/// The batches of every shard the worker holds; ends when the worker has stopped and every
/// batch was taken. Built by [`WorkerBuilder::build_stream`](crate::WorkerBuilder::build_stream).
#[derive(Debug)]
pub struct RecordStream {
    batches: mpsc::Receiver<Batch>,
}

impl RecordStream {
    /// The next batch (the same as polling the stream).
    pub async fn next_batch(&mut self) -> Option<Batch> {
        self.batches.recv().await
    }
}

impl futures_core::Stream for RecordStream {
    type Item = Batch;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Batch>> {
        self.batches.poll_recv(cx)
    }
}

/// A channel of `capacity` batches: the processor factory's end and the stream.
pub(crate) fn channel(
    capacity: usize,
) -> (impl Fn(&str) -> Box<dyn RecordProcessor>, RecordStream) {
    let (tx, batches) = mpsc::channel(capacity.max(1));
    let factory = move |_: &str| -> Box<dyn RecordProcessor> { Box::new(Forward(tx.clone())) };
    (factory, RecordStream { batches })
}

/// The processor behind the stream: forwards every batch.
struct Forward(mpsc::Sender<Batch>);

fn stream_gone() -> crate::processor::ProcessorError {
    "the RecordStream was dropped: nothing takes this shard's records (shut the worker down)".into()
}

#[async_trait]
impl RecordProcessor for Forward {
    async fn process_records(&mut self, input: ProcessRecordsInput<'_>) -> ProcessorResult {
        let batch = Batch {
            stream: input.checkpointer.stream().to_owned(),
            shard_id: input.checkpointer.shard_id().to_owned(),
            last: input.records.last().map(ConsumerRecord::position),
            records: input.records,
            millis_behind_latest: input.millis_behind_latest,
            shard_ended: false,
            checkpointer: input.checkpointer.clone(),
            ended: None,
        };
        let checkpointer = input.checkpointer;
        tokio::select! {
            sent = self.0.send(batch) => sent.map_err(|_| stream_gone()),
            // Nobody is taking batches and the worker stops: the batch was not delivered, so its
            // records come again from the last checkpoint, here or elsewhere.
            () = checkpointer.stopped() => Ok(()),
        }
    }

    async fn shard_ended(&mut self, checkpointer: &Checkpointer) -> ProcessorResult {
        let (ended, checkpointed) = oneshot::channel();
        let batch = Batch {
            stream: checkpointer.stream().to_owned(),
            shard_id: checkpointer.shard_id().to_owned(),
            records: Vec::new(),
            millis_behind_latest: None,
            shard_ended: true,
            checkpointer: checkpointer.clone(),
            last: None,
            ended: Some(ended),
        };
        tokio::select! {
            sent = self.0.send(batch) => sent.map_err(|_| stream_gone())?,
            () = checkpointer.stopped() => return Ok(()),
        }
        // Dropped without a checkpoint: the worker logs that the children wait, and asks again.
        // A shutdown or a lost lease does not wait for the application.
        tokio::select! {
            _ = checkpointed => {}
            () = checkpointer.stopped() => {}
        }
        Ok(())
    }
}
