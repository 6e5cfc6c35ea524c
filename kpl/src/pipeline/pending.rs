//! The units that flow through the pipeline: a user record waiting for its result, and a Kinesis
//! record (an aggregate, or one user record sent alone) carrying user records.

use std::sync::Arc;

use bytes::Bytes;
use kinesis_format::HashKey;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tokio::time::Instant;

use crate::error::{PutError, PutErrorKind};
use crate::record::{Attempt, PutOutcome, UserRecord};

use super::retry::Backoff;
use super::streams::StreamEntry;

/// What a user record's future resolves to.
pub(crate) type PutResult = Result<PutOutcome, PutError>;

/// A user record inside the pipeline, with everything needed to resolve it.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) record: UserRecord,
    /// The record's stream and its shard map.
    pub(crate) entry: Arc<StreamEntry>,
    pub(crate) hash_key: HashKey,
    /// When `put` accepted it.
    pub(crate) arrival: Instant,
    /// `arrival + record_ttl`.
    pub(crate) expires: Instant,
    /// When the current attempt's wait began (arrival, or the previous attempt's end).
    pub(crate) waiting_since: Instant,
    pub(crate) attempts: Vec<Attempt>,
    /// Boxed: most records never need one, and a smaller `Pending` is cheaper to move.
    pub(crate) backoff: Option<Box<Backoff>>,
    /// Taken when the record resolves; a record dropped unresolved fails as `Stopped`.
    pub(crate) reply: Option<oneshot::Sender<PutResult>>,
    /// Released when the record resolves (before its future is told): this bounds memory.
    pub(crate) permits: Option<Permits>,
    /// Held until the record's future has been told; `flush_and_wait` waits for every clone of
    /// its epoch's sender to drop.
    pub(crate) epoch: Option<mpsc::Sender<()>>,
}

/// The capacity a record holds while outstanding.
#[derive(Debug)]
pub(crate) struct Permits {
    pub(crate) _records: OwnedSemaphorePermit,
    pub(crate) _bytes: Option<OwnedSemaphorePermit>,
}

impl Permits {
    fn merge(&mut self, other: Permits) {
        self._records.merge(other._records);
        match (&mut self._bytes, other._bytes) {
            (Some(mine), Some(theirs)) => mine.merge(theirs),
            (mine @ None, theirs) => *mine = theirs,
            (Some(_), None) => {}
        }
    }
}

/// Frees the capacity of these records with one release per semaphore (a release takes the
/// semaphore's lock, so one per record would be a hot spot), before their futures are told.
pub(crate) fn release_capacity<'a>(records: impl Iterator<Item = &'a mut Pending>) {
    let mut merged: Option<Permits> = None;
    for p in records {
        if let Some(permits) = p.permits.take() {
            match &mut merged {
                Some(all) => all.merge(permits),
                None => merged = Some(permits),
            }
        }
    }
    drop(merged);
}

impl Pending {
    /// Resolves the record successfully.
    pub(crate) fn succeed(
        mut self,
        shard_id: &Arc<str>,
        sequence_number: &Arc<str>,
        sub_sequence_number: u64,
        aggregated: bool,
    ) {
        let outcome = PutOutcome {
            shard_id: shard_id.clone(),
            sequence_number: sequence_number.clone(),
            sub_sequence_number,
            aggregated,
            attempts: std::mem::take(&mut self.attempts),
        };
        self.resolve(Ok(outcome));
    }

    /// Resolves the record with an error, giving the record back.
    pub(crate) fn fail(mut self, kind: PutErrorKind) {
        self.fail_in_place(kind);
    }

    fn fail_in_place(&mut self, kind: PutErrorKind) {
        let error = PutError {
            kind,
            record: Box::new(self.record.clone()),
            attempts: std::mem::take(&mut self.attempts),
        };
        self.resolve(Err(error));
    }

    fn resolve(&mut self, result: PutResult) {
        // Free the capacity first: whoever awaits the result may check the bounds at once.
        self.permits = None;
        if let Some(reply) = self.reply.take() {
            // The caller may have dropped its future: nobody to tell then.
            let _ = reply.send(result);
        }
        self.epoch = None;
    }

    /// Takes the record back out of a pending record that never entered the pipeline.
    pub(crate) fn into_record(mut self) -> UserRecord {
        self.reply = None;
        self.record.clone()
    }

    /// The last attempt's error code and message, for an expiry message.
    pub(crate) fn last_error(&self) -> String {
        self.attempts
            .iter()
            .rev()
            .find_map(|a| a.error.as_ref())
            .map_or_else(
                || "none".to_owned(),
                |e| format!("{}: {}", e.code, e.message),
            )
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.reply.is_some() {
            self.fail_in_place(PutErrorKind::Stopped);
        }
    }
}

/// The identity of a stream inside the pipeline (its name or ARN as the user gave it).
pub(crate) type StreamId = Arc<str>;

/// One record of a PutRecords call.
#[derive(Debug)]
pub(crate) struct KinesisRecord {
    pub(crate) stream: StreamId,
    /// The shard the shard map predicted (`None` when the map had no owner for the key).
    pub(crate) predicted_shard: Option<Arc<str>>,
    pub(crate) partition_key: String,
    pub(crate) explicit_hash_key: Option<String>,
    /// Moved into the PutRecords request when sent (so empty afterwards).
    pub(crate) data: Bytes,
    /// Data + partition key bytes, as counted against the PutRecords and per-shard limits.
    pub(crate) size: usize,
    /// The user records it carries, in sub-sequence order.
    pub(crate) user_records: Vec<Pending>,
    /// The earliest time any of its user records must be sent by (arrival + linger).
    pub(crate) send_by: Instant,
}

impl KinesisRecord {
    /// Bytes counted against the PutRecords and per-shard byte limits: data + partition key.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    pub(crate) fn aggregated(&self) -> bool {
        self.user_records.len() > 1
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tokio::sync::Semaphore;

    /// A pending user record for unit tests (its result receiver is dropped).
    pub(crate) fn pending(partition_key: &str, data_len: usize, arrival: Instant) -> Pending {
        let record = UserRecord::new("stream", partition_key, vec![7u8; data_len]);
        let (reply, _) = oneshot::channel();
        let (epoch, _) = mpsc::channel(1);
        let semaphore = Arc::new(Semaphore::new(1));
        Pending {
            entry: Arc::new(StreamEntry::new(record.stream.clone())),
            hash_key: HashKey::from_partition_key(partition_key),
            record,
            arrival,
            expires: arrival + std::time::Duration::from_secs(30),
            waiting_since: arrival,
            attempts: Vec::new(),
            backoff: None,
            reply: Some(reply),
            permits: Some(Permits {
                _records: semaphore.try_acquire_owned().expect("permit"),
                _bytes: None,
            }),
            epoch: Some(epoch),
        }
    }
}
