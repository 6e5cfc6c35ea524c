//! What goes in (a [`UserRecord`]) and what comes out (a [`PutOutcome`] with its [`Attempt`]s).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

/// One record as the application gives it: a stream (name or ARN), a partition key, an optional
/// explicit hash key, and the data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    pub(crate) stream: Arc<str>,
    pub(crate) partition_key: String,
    pub(crate) explicit_hash_key: Option<String>,
    pub(crate) data: Bytes,
}

impl UserRecord {
    /// A record for `stream` (its name, or its ARN starting with `arn:`).
    pub fn new(
        stream: impl Into<Arc<str>>,
        partition_key: impl Into<String>,
        data: impl Into<Bytes>,
    ) -> Self {
        UserRecord {
            stream: stream.into(),
            partition_key: partition_key.into(),
            explicit_hash_key: None,
            data: data.into(),
        }
    }

    /// Routes the record by this explicit hash key instead of by the MD5 of its partition key:
    /// `0` or a decimal integer below 2^128 without leading zeros, as Kinesis takes it (`put`
    /// refuses `"007"` with [`kinesis_format::HashKeyError::LeadingZeros`], naming `"7"`). It does
    /// not count toward the record's size.
    pub fn with_explicit_hash_key(mut self, explicit_hash_key: impl Into<String>) -> Self {
        self.explicit_hash_key = Some(explicit_hash_key.into());
        self
    }

    /// The stream name or ARN.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The partition key.
    pub fn partition_key(&self) -> &str {
        &self.partition_key
    }

    /// The explicit hash key, if any.
    pub fn explicit_hash_key(&self) -> Option<&str> {
        self.explicit_hash_key.as_deref()
    }

    /// The data.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// What the record counts against the producer's byte bound (`max_outstanding_bytes`):
    /// data, partition key and explicit hash key bytes.
    pub fn size(&self) -> usize {
        self.kinesis_size() + self.explicit_hash_key.as_ref().map_or(0, String::len)
    }

    /// What Kinesis counts against its record size limit: data plus partition key.
    pub(crate) fn kinesis_size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }
}

/// The successful result of one user record.
///
/// Kept small (it travels from the pipeline to the caller for every record): what the user
/// records of one Kinesis record share is behind one reference-counted pointer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutOutcome {
    stored: Arc<StoredAt>,
    sub_sequence_number: u64,
    /// The successful attempt's delay (its duration is the call's, in `stored`).
    delay: Duration,
    /// Failed attempts before the successful one; `None` when the first attempt succeeded.
    earlier: Option<Box<[Attempt]>>,
}

/// What the user records of one stored Kinesis record share.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct StoredAt {
    pub(crate) shard_id: Box<str>,
    pub(crate) sequence_number: Box<str>,
    /// How long the PutRecords call took.
    pub(crate) duration: Duration,
    /// Whether the Kinesis record was an aggregate of several user records.
    pub(crate) aggregated: bool,
}

impl PutOutcome {
    pub(crate) fn new(
        stored: Arc<StoredAt>,
        sub_sequence_number: u64,
        delay: Duration,
        earlier: Vec<Attempt>,
    ) -> Self {
        PutOutcome {
            stored,
            sub_sequence_number,
            delay,
            earlier: (!earlier.is_empty()).then(|| earlier.into_boxed_slice()),
        }
    }

    /// The shard that stored the record.
    pub fn shard_id(&self) -> &str {
        &self.stored.shard_id
    }

    /// The sequence number of the Kinesis record that carried it (shared by the user records of
    /// one aggregate).
    pub fn sequence_number(&self) -> &str {
        &self.stored.sequence_number
    }

    /// Its position inside that Kinesis record's aggregate (0 when it was sent alone).
    pub fn sub_sequence_number(&self) -> u64 {
        self.sub_sequence_number
    }

    /// Whether it was sent inside an aggregate of several user records.
    pub fn aggregated(&self) -> bool {
        self.stored.aggregated
    }

    /// How many attempts it took (at least 1).
    pub fn attempt_count(&self) -> usize {
        self.earlier.as_ref().map_or(0, |e| e.len()) + 1
    }

    /// Every attempt, the last one the success (built on request: results carry them compactly).
    pub fn attempts(&self) -> Vec<Attempt> {
        let mut all = self
            .earlier
            .as_deref()
            .map(<[Attempt]>::to_vec)
            .unwrap_or_default();
        all.push(Attempt::new(self.delay, self.stored.duration, None));
        all
    }
}

/// One attempt to put a user record (as part of a PutRecords call).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Attempt {
    /// Time from the record's arrival (first attempt) or the previous attempt's end (later ones)
    /// to this attempt's start: buffering, rate limiting and back-off.
    pub delay: Duration,
    /// How long the PutRecords call took.
    pub duration: Duration,
    /// Why it failed; `None` for the successful attempt.
    pub error: Option<AttemptError>,
}

/// Why an attempt failed: an error code (Kinesis' own, or one of the producer's such as
/// `Timeout`, `Connection`, `WrongShard`) and a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptError {
    /// The error code.
    pub code: String,
    /// The error message.
    pub message: String,
}

impl AttemptError {
    /// Whether this attempt's outcome is unknown: it timed out or lost its connection, so
    /// Kinesis may have stored the record anyway. (A connection refused outright cannot be told
    /// apart from one that broke after the request went out, so both count.)
    pub fn outcome_unknown(&self) -> bool {
        matches!(self.code.as_str(), "Timeout" | "Connection")
    }
}

impl Attempt {
    pub(crate) fn new(delay: Duration, duration: Duration, error: Option<AttemptError>) -> Self {
        Attempt {
            delay,
            duration,
            error,
        }
    }
}
