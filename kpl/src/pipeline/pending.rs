//! The units that flow through the pipeline: a user record waiting for its result, and a Kinesis
//! record (an aggregate, or one user record sent alone) carrying user records.

use std::sync::Arc;

use super::slots::Sender;
use bytes::Bytes;
use kinesis_format::{HashKey, Unsealed};
use tokio::time::Instant;

use crate::error::{PutError, PutErrorKind};
use crate::record::{Attempt, PutOutcome, StoredAt, UserRecord};

use super::retry::Backoff;

/// What a user record's future is sent (the error boxed: it is rare, and large).
pub(crate) type PutResult = Result<PutOutcome, Box<PutError>>;

/// A user record inside the pipeline, with everything needed to resolve it.
///
/// It holds `max_outstanding_*` capacity (see [`Capacity`](super::capacity::Capacity)) from
/// `put` until the dispatcher resolves it; the dispatcher gives that capacity back.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) record: UserRecord,
    /// Where the record lands. Without an explicit hash key, the MD5 of the partition key:
    /// computed by the dispatcher when it takes the record from the inbox, many keys at once.
    pub(crate) hash_key: HashKey,
    /// When the dispatcher received it (it expires at `arrival + record_ttl`).
    pub(crate) arrival: Instant,
    /// Boxed: most records never need one, and a smaller `Pending` is cheaper to move.
    pub(crate) retry: Option<Box<Retry>>,
    /// Taken when the record resolves; a record dropped unresolved fails as `Stopped`.
    pub(crate) reply: Sender<PutResult>,
    /// Its `flush_and_wait` epoch, set when the dispatcher receives it.
    pub(crate) epoch: u64,
}

/// A user record on its way from `put` to the dispatcher: only what the caller has. Every
/// record crosses from the caller's thread to the dispatcher's here, so this is kept small (two
/// cache lines, against the 144 bytes of a [`Pending`]); the dispatcher adds the rest.
///
/// Dropped unconverted (only if the dispatcher is cancelled with it still in the inbox), its
/// future fails as `Stopped` without the record.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub(crate) record: UserRecord,
    pub(crate) reply: Sender<PutResult>,
}

impl Incoming {
    /// The record inside the pipeline: `hash_key` where it lands, received at `arrival` in
    /// flush epoch `epoch`.
    pub(crate) fn into_pending(self, hash_key: HashKey, arrival: Instant, epoch: u64) -> Pending {
        Pending {
            record: self.record,
            hash_key,
            arrival,
            retry: None,
            reply: self.reply,
            epoch,
        }
    }

    /// Takes the record back out of a put that never entered the pipeline.
    pub(crate) fn into_record(mut self) -> UserRecord {
        self.reply.close();
        self.record
    }
}

/// A record's state after a failed attempt.
#[derive(Debug)]
pub(crate) struct Retry {
    /// The failed attempts.
    pub(crate) attempts: Vec<Attempt>,
    pub(crate) backoff: Backoff,
    /// When the last attempt ended (the next attempt's delay counts from here).
    pub(crate) since: Instant,
}

impl Pending {
    /// When the current attempt's wait began (arrival, or the previous attempt's end).
    pub(crate) fn waiting_since(&self) -> Instant {
        self.retry.as_ref().map_or(self.arrival, |r| r.since)
    }

    /// How many attempts have failed.
    pub(crate) fn failed_attempts(&self) -> usize {
        self.retry.as_ref().map_or(0, |r| r.attempts.len())
    }

    fn take_attempts(&mut self) -> Vec<Attempt> {
        self.retry
            .as_mut()
            .map(|r| std::mem::take(&mut r.attempts))
            .unwrap_or_default()
    }

    /// Resolves the record successfully; its last attempt waited `delay` before the call.
    pub(crate) fn succeed(
        mut self,
        stored: &Arc<StoredAt>,
        sub_sequence_number: u64,
        delay: std::time::Duration,
    ) {
        let earlier = self.take_attempts();
        let outcome = PutOutcome::new(stored.clone(), sub_sequence_number, delay, earlier);
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
            attempts: self.take_attempts(),
        };
        self.resolve(Err(Box::new(error)));
    }

    fn resolve(&mut self, result: PutResult) {
        // If the caller dropped its future, the result is dropped.
        self.reply.send(result);
    }

    /// Whether some attempt's outcome is unknown (timed out or lost its connection).
    pub(crate) fn maybe_stored(&self) -> bool {
        self.retry
            .iter()
            .flat_map(|r| r.attempts.iter())
            .filter_map(|a| a.error.as_ref())
            .any(crate::AttemptError::outcome_unknown)
    }

    /// The last attempt's error code and message, for an expiry message.
    pub(crate) fn last_error(&self) -> String {
        self.retry
            .iter()
            .flat_map(|r| r.attempts.iter())
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
        if self.reply.is_open() {
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
    pub(crate) data: Payload,
    /// Data + partition key bytes, as counted against the PutRecords and per-shard limits.
    pub(crate) size: usize,
    /// The user records it carries, in sub-sequence order.
    pub(crate) user_records: Vec<Pending>,
    /// The earliest time any of its user records must be sent by (arrival + linger).
    pub(crate) send_by: Instant,
}

/// A Kinesis record's data.
#[derive(Debug)]
pub(crate) enum Payload {
    Ready(Bytes),
    /// An aggregate still missing its MD5: the dispatcher seals every aggregate of a PutRecords
    /// call at once, computing their MD5s side by side (see [`seal_all`]).
    Unsealed(Unsealed),
}

impl Default for Payload {
    fn default() -> Self {
        Payload::Ready(Bytes::new())
    }
}

impl Payload {
    /// Its length once sealed.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        match self {
            Payload::Ready(bytes) => bytes.len(),
            Payload::Unsealed(unsealed) => unsealed.framed_len(),
        }
    }

    /// The data, leaving the payload empty; an unsealed aggregate is sealed alone.
    pub(crate) fn take(&mut self) -> Bytes {
        match std::mem::take(self) {
            Payload::Ready(bytes) => bytes,
            Payload::Unsealed(unsealed) => unsealed.seal(),
        }
    }
}

/// Seals the records' unsealed aggregates, all at once.
pub(crate) fn seal_all(records: &mut [KinesisRecord]) {
    let (at, unsealed): (Vec<usize>, Vec<Unsealed>) = records
        .iter_mut()
        .enumerate()
        .filter_map(|(i, r)| match std::mem::take(&mut r.data) {
            Payload::Unsealed(unsealed) => Some((i, unsealed)),
            ready => {
                r.data = ready;
                None
            }
        })
        .unzip();
    for (i, sealed) in at.into_iter().zip(Unsealed::seal_all(unsealed)) {
        records[i].data = Payload::Ready(sealed);
    }
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

    #[test]
    fn a_pending_record_stays_small() {
        // Every record is moved through the inbox and into its aggregate: each cache line it
        // grows by costs every record. Boxing rare state (retries, errors) keeps it here.
        let size = std::mem::size_of::<Pending>();
        assert!(size <= 160, "Pending grew to {size} bytes");
        let size = std::mem::size_of::<Incoming>();
        assert!(size <= 112, "Incoming grew to {size} bytes");
    }

    /// A pending user record for unit tests (its result receiver is dropped).
    pub(crate) fn pending(partition_key: &str, data_len: usize, arrival: Instant) -> Pending {
        let record = UserRecord::new("stream", partition_key, vec![7u8; data_len]);
        let (reply, _) = crate::pipeline::slots::Slots::default().pair();
        Pending {
            hash_key: HashKey::from_partition_key(partition_key),
            record,
            arrival,
            retry: None,
            reply,
            epoch: 0,
        }
    }
}
