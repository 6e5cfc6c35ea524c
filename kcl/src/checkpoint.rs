//! Checkpointing from a processor. Every checkpoint is a conditional write on the lease (counter
//! and owner): if this worker no longer holds the lease it fails with
//! [`CheckpointError::LeaseLost`], and the shard's processor is stopped.

use std::sync::{Arc, Mutex};

use kinesis_format::{ExtendedSequenceNumber, SequenceNumber};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::held::HeldLease;
use crate::leases::{CheckpointPosition, LeaseError, LeaseStore};

/// Why a checkpoint was not stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// This worker no longer holds the shard's lease; another worker continues from the last
    /// stored checkpoint.
    #[error(
        "lease for shard {shard_id} is lost: another worker holds it now, so this checkpoint cannot be stored"
    )]
    LeaseLost {
        /// The shard.
        shard_id: String,
    },
    /// Nothing was delivered yet, so there is nothing to checkpoint.
    #[error("no record of shard {shard_id} was delivered yet: nothing to checkpoint")]
    NothingDelivered {
        /// The shard.
        shard_id: String,
    },
    /// The position lies after the last record delivered to the processor.
    #[error(
        "checkpoint {position} of shard {shard_id} is beyond the last delivered record {last_delivered:?}: checkpoint only records you have processed"
    )]
    BeyondLastDelivered {
        /// The shard.
        shard_id: String,
        /// The requested position.
        position: ExtendedSequenceNumber,
        /// The last delivered record's position.
        last_delivered: Option<ExtendedSequenceNumber>,
    },
    /// The position lies before the last stored checkpoint (an acknowledgement that arrived
    /// after a later one): the checkpoint stays where it is. Safe to ignore.
    #[error(
        "checkpoint {position} of shard {shard_id} is before the stored checkpoint {stored}: the checkpoint does not move back"
    )]
    BeforeLastCheckpoint {
        /// The shard.
        shard_id: String,
        /// The requested position.
        position: ExtendedSequenceNumber,
        /// The stored checkpoint.
        stored: ExtendedSequenceNumber,
    },
    /// The lease table failed; the checkpoint may be retried.
    #[error("could not store the checkpoint of shard {shard_id}: {source}")]
    Store {
        /// The shard.
        shard_id: String,
        /// The store's error.
        source: LeaseError,
    },
}

/// Given to a processor to record its progress.
///
/// A `Checkpointer` is `Clone` and `'static`: a processor may keep a clone and checkpoint later
/// from another task, after an asynchronous acknowledgement (a downstream write, a broker's ack).
/// Clones share one state. Such a late checkpoint should name the record it acknowledges
/// ([`checkpoint_at`](Self::checkpoint_at)): [`checkpoint`](Self::checkpoint) means "everything
/// delivered so far", which by then includes later batches. A position before the last stored
/// checkpoint is refused ([`CheckpointError::BeforeLastCheckpoint`]), so acknowledgements that
/// arrive out of order never move the checkpoint back. Once the worker no longer holds the lease
/// (lost, released at shutdown or after the shard's end), every clone fails with
/// [`CheckpointError::LeaseLost`].
#[derive(Clone, Debug)]
pub struct Checkpointer {
    shard_id: String,
    stream: Arc<str>,
    held: Arc<HeldLease>,
    store: Arc<dyn LeaseStore>,
    state: Arc<Mutex<Progress>>,
    /// Cancelled when the shard's consumer is asked to stop (the worker shuts down).
    stopping: CancellationToken,
}

#[derive(Debug, Default)]
struct Progress {
    last_delivered: Option<ExtendedSequenceNumber>,
    at_shard_end: bool,
}

impl Checkpointer {
    pub(crate) fn new(held: Arc<HeldLease>, store: Arc<dyn LeaseStore>) -> Self {
        Checkpointer {
            shard_id: held.shard_id.clone(),
            stream: Arc::from(""),
            held,
            store,
            state: Arc::new(Mutex::new(Progress::default())),
            stopping: CancellationToken::new(),
        }
    }

    /// The same, for a shard of `stream` (its name or ARN as given to the worker).
    pub(crate) fn in_stream(mut self, stream: &str) -> Self {
        self.stream = Arc::from(stream);
        self
    }

    /// The same, told when the shard's consumer is asked to stop.
    pub(crate) fn stopping_with(mut self, stopping: CancellationToken) -> Self {
        self.stopping = stopping;
        self
    }

    /// Resolves when the lease is lost or released, or the worker shuts down: nothing should
    /// wait on the application any longer.
    pub(crate) async fn stopped(&self) {
        tokio::select! {
            () = self.held.lost.cancelled() => {}
            () = self.stopping.cancelled() => {}
        }
    }

    /// The shard this checkpointer writes for.
    pub fn shard_id(&self) -> &str {
        &self.shard_id
    }

    /// The shard's stream: its name or ARN as given to the worker.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    pub(crate) fn delivered(&self, position: ExtendedSequenceNumber) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_delivered = Some(position);
    }

    pub(crate) fn reached_shard_end(&self) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .at_shard_end = true;
    }

    /// Checkpoints the last record delivered to the processor; at shard end (in `shard_ended`),
    /// checkpoints SHARD_END so that the shard's children can start.
    pub async fn checkpoint(&self) -> Result<(), CheckpointError> {
        let position = {
            let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if state.at_shard_end {
                CheckpointPosition::ShardEnd
            } else {
                let last = state.last_delivered.clone().ok_or_else(|| {
                    CheckpointError::NothingDelivered {
                        shard_id: self.shard_id.clone(),
                    }
                })?;
                CheckpointPosition::Sequence {
                    sequence: last.sequence,
                    sub_sequence: last.sub_sequence,
                }
            }
        };
        self.write(&position, None).await
    }

    /// Checkpoints a given record position (at or before the last delivered record).
    pub async fn checkpoint_at(
        &self,
        sequence: &SequenceNumber,
        sub_sequence: u64,
    ) -> Result<(), CheckpointError> {
        let position = self.validate(sequence, sub_sequence)?;
        self.write(&position, None).await
    }

    /// Two-phase checkpoint: stores `pendingCheckpoint` now; [`PreparedCheckpoint::commit`] makes
    /// it the checkpoint. A worker that takes the lease meanwhile sees the pending one.
    pub async fn prepare_checkpoint(
        &self,
        sequence: &SequenceNumber,
        sub_sequence: u64,
    ) -> Result<PreparedCheckpoint<'_>, CheckpointError> {
        let position = self.validate(sequence, sub_sequence)?;
        let current = self.held.lease.lock().await.checkpoint.clone();
        self.write(&current, Some(&position)).await?;
        Ok(PreparedCheckpoint {
            checkpointer: self,
            position,
        })
    }

    fn validate(
        &self,
        sequence: &SequenceNumber,
        sub_sequence: u64,
    ) -> Result<CheckpointPosition, CheckpointError> {
        let requested = ExtendedSequenceNumber::new(sequence.clone(), sub_sequence);
        let last = self
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_delivered
            .clone();
        if last.as_ref().is_none_or(|l| requested > *l) {
            return Err(CheckpointError::BeyondLastDelivered {
                shard_id: self.shard_id.clone(),
                position: requested,
                last_delivered: last,
            });
        }
        Ok(CheckpointPosition::Sequence {
            sequence: sequence.clone(),
            sub_sequence,
        })
    }

    async fn write(
        &self,
        position: &CheckpointPosition,
        pending: Option<&CheckpointPosition>,
    ) -> Result<(), CheckpointError> {
        let lost = || CheckpointError::LeaseLost {
            shard_id: self.shard_id.clone(),
        };
        if self.held.lost.is_cancelled() {
            return Err(lost());
        }
        let mut lease = self.held.lease.lock().await;
        if let (
            CheckpointPosition::Sequence {
                sequence,
                sub_sequence,
            },
            CheckpointPosition::Sequence {
                sequence: stored_sequence,
                sub_sequence: stored_sub_sequence,
            },
        ) = (position, &lease.checkpoint)
        {
            let requested = ExtendedSequenceNumber::new(sequence.clone(), *sub_sequence);
            let stored = ExtendedSequenceNumber::new(stored_sequence.clone(), *stored_sub_sequence);
            if requested < stored {
                return Err(CheckpointError::BeforeLastCheckpoint {
                    shard_id: self.shard_id.clone(),
                    position: requested,
                    stored,
                });
            }
        }
        let started = Instant::now();
        let written = self.store.checkpoint(&lease, position, pending).await;
        crate::kcl_metrics::checkpoint(&self.shard_id, started.elapsed(), written.is_ok());
        match written {
            Ok(updated) => {
                tracing::trace!(shard = %self.shard_id, counter = updated.counter, checkpoint = %updated.checkpoint, "checkpoint stored");
                *lease = updated;
                Ok(())
            }
            Err(e @ (LeaseError::Conflict { .. } | LeaseError::NotFound { .. })) => {
                tracing::warn!(shard = %self.shard_id, error = %e, "checkpoint found the lease taken");
                if !self.held.lost.is_cancelled() {
                    crate::kcl_metrics::lost();
                }
                self.held.lost.cancel();
                Err(lost())
            }
            Err(source) => Err(CheckpointError::Store {
                shard_id: self.shard_id.clone(),
                source,
            }),
        }
    }
}

/// A stored pending checkpoint, to be committed.
#[derive(Debug)]
#[must_use = "a prepared checkpoint does nothing until committed"]
pub struct PreparedCheckpoint<'a> {
    checkpointer: &'a Checkpointer,
    position: CheckpointPosition,
}

impl PreparedCheckpoint<'_> {
    /// The prepared position.
    pub fn position(&self) -> &CheckpointPosition {
        &self.position
    }

    /// Makes the pending checkpoint the checkpoint.
    pub async fn commit(self) -> Result<(), CheckpointError> {
        self.checkpointer.write(&self.position, None).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leases::{Lease, MemoryLeaseStore};

    async fn setup() -> (Arc<MemoryLeaseStore>, Checkpointer) {
        let store = Arc::new(MemoryLeaseStore::new());
        let lease = Lease::new("s0", CheckpointPosition::TrimHorizon);
        store.create_if_absent(&lease).await.unwrap();
        let mine = store.take(&lease, "me").await.unwrap();
        let checkpointer = Checkpointer::new(HeldLease::new(mine), store.clone());
        (store, checkpointer)
    }

    fn seq(s: &str) -> SequenceNumber {
        SequenceNumber::parse(s).unwrap()
    }

    #[tokio::test]
    async fn checkpoints_only_what_was_delivered() {
        let (store, c) = setup().await;
        assert!(matches!(
            c.checkpoint().await,
            Err(CheckpointError::NothingDelivered { .. })
        ));
        c.delivered(ExtendedSequenceNumber::new(seq("100"), 4));
        assert!(matches!(
            c.checkpoint_at(&seq("100"), 5).await,
            Err(CheckpointError::BeyondLastDelivered { .. })
        ));
        c.checkpoint_at(&seq("100"), 2).await.unwrap();
        let stored = store.get("s0").await.unwrap().unwrap();
        assert_eq!(
            stored.checkpoint,
            CheckpointPosition::Sequence {
                sequence: seq("100"),
                sub_sequence: 2
            }
        );
        c.checkpoint().await.unwrap();
        let stored = store.get("s0").await.unwrap().unwrap();
        assert_eq!(
            stored.checkpoint,
            CheckpointPosition::Sequence {
                sequence: seq("100"),
                sub_sequence: 4
            }
        );
        c.reached_shard_end();
        c.checkpoint().await.unwrap();
        assert!(store.get("s0").await.unwrap().unwrap().is_finished());
    }

    #[tokio::test]
    async fn two_phase_checkpoint_stores_pending_then_commits() {
        let (store, c) = setup().await;
        c.delivered(ExtendedSequenceNumber::new(seq("7"), 0));
        let prepared = c.prepare_checkpoint(&seq("7"), 0).await.unwrap();
        let stored = store.get("s0").await.unwrap().unwrap();
        assert_eq!(
            stored.checkpoint,
            CheckpointPosition::TrimHorizon,
            "not yet the checkpoint"
        );
        assert_eq!(stored.pending_checkpoint, Some(prepared.position().clone()));
        prepared.commit().await.unwrap();
        let stored = store.get("s0").await.unwrap().unwrap();
        assert_eq!(
            stored.checkpoint,
            CheckpointPosition::Sequence {
                sequence: seq("7"),
                sub_sequence: 0
            }
        );
        assert_eq!(stored.pending_checkpoint, None);
    }

    #[tokio::test]
    async fn a_taken_lease_fails_with_lease_lost_and_stops_the_shard() {
        let (store, c) = setup().await;
        c.delivered(ExtendedSequenceNumber::new(seq("7"), 0));
        let current = store.get("s0").await.unwrap().unwrap();
        store.take(&current, "thief").await.unwrap();
        let err = c.checkpoint().await.unwrap_err();
        assert!(matches!(err, CheckpointError::LeaseLost { .. }), "{err}");
        assert!(err.to_string().contains("another worker holds it"), "{err}");
        assert!(
            c.held.lost.is_cancelled(),
            "the shard consumer is stopped with lease_lost"
        );
        assert_eq!(
            store.get("s0").await.unwrap().unwrap().owner.as_deref(),
            Some("thief")
        );
    }

    #[tokio::test]
    async fn a_clone_checkpoints_from_another_task_after_the_batch_and_never_moves_back() {
        let (store, c) = setup().await;
        c.delivered(ExtendedSequenceNumber::new(seq("100"), 0));
        // Acknowledged later, elsewhere: the clone outlives the processor's borrow.
        let late = c.clone();
        let acked = tokio::spawn(async move { late.checkpoint_at(&seq("100"), 0).await });
        acked.await.unwrap().unwrap();
        let stored = || async { store.get("s0").await.unwrap().unwrap().checkpoint };
        let at_100 = CheckpointPosition::Sequence {
            sequence: seq("100"),
            sub_sequence: 0,
        };
        assert_eq!(stored().await, at_100);
        // Clones share what was delivered since.
        c.delivered(ExtendedSequenceNumber::new(seq("200"), 0));
        let late = c.clone();
        tokio::spawn(async move { late.checkpoint_at(&seq("200"), 0).await })
            .await
            .unwrap()
            .unwrap();
        // An acknowledgement that arrives out of order is refused and changes nothing.
        let err = c.checkpoint_at(&seq("100"), 0).await.unwrap_err();
        assert!(
            matches!(err, CheckpointError::BeforeLastCheckpoint { .. }),
            "{err}"
        );
        assert_eq!(
            stored().await,
            CheckpointPosition::Sequence {
                sequence: seq("200"),
                sub_sequence: 0
            }
        );
    }

    #[tokio::test]
    async fn a_clone_kept_past_the_lease_fails_with_lease_lost() {
        let (store, c) = setup().await;
        c.delivered(ExtendedSequenceNumber::new(seq("7"), 0));
        let kept = c.clone();
        drop(c);
        let current = store.get("s0").await.unwrap().unwrap();
        store.take(&current, "other").await.unwrap();
        let err = kept.checkpoint_at(&seq("7"), 0).await.unwrap_err();
        assert!(matches!(err, CheckpointError::LeaseLost { .. }), "{err}");
        assert_eq!(
            store.get("s0").await.unwrap().unwrap().checkpoint,
            CheckpointPosition::TrimHorizon,
            "the new owner's checkpoint is untouched"
        );
    }
}
