//! Typed errors. Every error that concerns a user record gives the record back.

use std::fmt;

use kinesis_format::{HashKeyError, PartitionKeyError};

use crate::record::{Attempt, UserRecord};

/// A record refused by `put`/`try_put` before it entered the pipeline; nothing was enqueued.
#[derive(Debug, thiserror::Error)]
#[error("record refused: {kind}")]
pub struct SubmitError {
    /// Why.
    pub kind: SubmitErrorKind,
    /// The record, unchanged.
    pub record: Box<UserRecord>,
}

/// Why a record was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitErrorKind {
    /// The partition key is empty or too long.
    #[error(transparent)]
    PartitionKey(#[from] PartitionKeyError),
    /// The explicit hash key is not a decimal integer below 2^128.
    #[error(transparent)]
    ExplicitHashKey(#[from] HashKeyError),
    /// Data plus partition key exceed the stream's maximum record size or
    /// `max_user_record_size`.
    #[error(
        "record is {size} bytes (data + partition key); the limit is {max} bytes (the stream's maximum record size where Kinesis reports it, else 1 MiB, capped by max_user_record_size if set and by max_outstanding_bytes): split the data, or raise the stream's limit (UpdateMaxRecordSize, up to 10 MiB) and max_user_record_size if set"
    )]
    TooLarge {
        /// The record's size.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// The stream name is empty.
    #[error("stream name is empty: give a stream name or ARN")]
    EmptyStream,
    /// Kinesis says the stream does not exist.
    #[error(
        "stream {stream:?} does not exist (Kinesis answered ResourceNotFound): check the name, account and region; once a stream is found deleted, its records are refused at once until it exists again (looked for every 10 s)"
    )]
    StreamNotFound {
        /// The stream as given.
        stream: String,
    },
    /// The stream's shards could not be listed (after retries).
    #[error(
        "could not list the shards of stream {stream:?} ({message}): check that the endpoint answers (region, AWS_ENDPOINT_URL_KINESIS, network), the credentials and the kinesis:ListShards permission; an unknown stream is reported as such only once the endpoint answers"
    )]
    ShardMap {
        /// The stream as given.
        stream: String,
        /// The last error.
        message: String,
    },
    /// `try_put` only: the outstanding-records or outstanding-bytes bound is reached.
    #[error(
        "producer is full ({what} at its bound): wait for outstanding records to finish, use put() to wait, or raise max_outstanding_records/max_outstanding_bytes"
    )]
    Full {
        /// Which bound: "records" or "bytes".
        what: &'static str,
    },
    /// The producer is shutting down or has stopped.
    #[error("producer is shut down")]
    ShutDown,
}

/// A user record that did not make it into Kinesis.
#[derive(Debug, thiserror::Error)]
pub struct PutError {
    /// Why.
    pub kind: PutErrorKind,
    /// The record, unchanged.
    pub record: Box<UserRecord>,
    /// Every attempt made.
    pub attempts: Vec<Attempt>,
}

impl fmt::Display for PutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "put to stream {:?} failed after {} attempt(s): {}",
            self.record.stream(),
            self.attempts.len(),
            self.kind
        )
    }
}

/// Why a user record failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PutErrorKind {
    /// `record_ttl` passed and every attempt was refused or never sent: the record is not in
    /// the stream. Re-sending it cannot duplicate it.
    #[error("record_ttl expired before Kinesis stored the record (last error: {last_error})")]
    Expired {
        /// The last attempt's error, or "none" when it never got an answer.
        last_error: String,
    },
    /// `record_ttl` passed, and some attempt timed out or lost its connection after the request
    /// may have gone out: Kinesis may have stored the record. Re-sending it may duplicate it; not
    /// re-sending it may lose it. Consumers that deduplicate by content or key can re-send safely.
    #[error(
        "record_ttl expired; an attempt timed out or lost its connection, so Kinesis may have stored the record (last error: {last_error})"
    )]
    Indeterminate {
        /// The last attempt's error.
        last_error: String,
    },
    /// Throttled while `fail_if_throttled` is set.
    #[error("throttled ({code}: {message}) and fail_if_throttled is set")]
    Throttled {
        /// The error code.
        code: String,
        /// The error message.
        message: String,
    },
    /// Kinesis refused the record or the call for a reason retrying cannot fix.
    #[error("Kinesis refused it: {code}: {message}")]
    Rejected {
        /// The error code.
        code: String,
        /// The error message.
        message: String,
    },
    /// The producer stopped before the record got a result.
    #[error("the producer stopped before the record got a result")]
    Stopped,
}

/// A configuration the producer cannot run with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid producer configuration: {0}")]
pub struct ConfigError(pub(crate) String);
