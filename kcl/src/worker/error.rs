//! Why a worker stopped: each error says what to fix and keeps its cause as `source()`.

use kinesis_retry::AwsError;

use crate::config::ConfigError;
use crate::leases::LeaseError;

/// Why [`crate::Worker::run`] returned an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// A setting is invalid (checked before anything starts).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The stream does not exist, or was deleted while the worker ran. Processors got
    /// `shutdown_requested` (their chance to checkpoint) before the worker stopped.
    #[error(
        "stream {stream} does not exist (or was deleted): check the stream name, the account and the region"
    )]
    StreamNotFound {
        /// The stream as configured.
        stream: String,
        /// Kinesis' answer.
        #[source]
        source: AwsError,
    },
    /// Kinesis refused a call that no retry can fix (access denied, KMS key disabled, ...).
    #[error(
        "Kinesis refused a call for stream {stream} ({source}): fix the permissions or the stream's settings, then restart the worker"
    )]
    Kinesis {
        /// The stream as configured.
        stream: String,
        /// Kinesis' answer.
        #[source]
        source: AwsError,
    },
    /// The lease table was deleted while the worker ran. The worker stops rather than recreate
    /// it, since a new table would restart every shard from the initial position (records
    /// skipped under `Latest`, delivered again under `TrimHorizon`). Processors got
    /// `lease_lost`. Restarting the workers creates a new table on purpose.
    #[error(
        "the lease table was deleted while the worker ran; stopped instead of recreating it (that would restart every shard from its initial position): restart the workers to create a new table"
    )]
    LeaseTableDeleted {
        /// The store's error.
        #[source]
        source: LeaseError,
    },
    /// The lease table holds leases of another stream (the application name was re-used for a
    /// different stream, or the stream was deleted and created again).
    #[error(
        "lease table holds leases of stream {found}, not of {expected} (account:name:creation-epoch): use another application name for this stream, or delete the table"
    )]
    LeaseTableOfAnotherStream {
        /// This stream's identifier.
        expected: String,
        /// The identifier found on a lease.
        found: String,
    },
    /// The lease table is a multi-stream application's and this worker reads one stream, or
    /// the other way round: their lease keys differ (`shardId` against
    /// `account:stream:creationEpoch:shardId`), so neither can use the other's leases.
    #[error(
        "lease table holds {found} leases (lease {key}) but this worker is a {expected} worker: build a multi-stream worker with .streams(...) for a multi-stream table, and a single-stream one with .stream(...) for a single-stream table, or use another application name"
    )]
    LeaseTableOfOtherKind {
        /// "multi-stream" or "single-stream": what this worker is.
        expected: &'static str,
        /// What the lease found is.
        found: &'static str,
        /// A lease key of the other kind.
        key: String,
    },
    /// The lease table could not be created or read at start (permissions, limits, ...).
    #[error("lease table: {0}")]
    Leases(#[source] LeaseError),
}
