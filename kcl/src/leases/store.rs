//! The lease table behind a trait: DynamoDB in production, memory in unit tests. Every change is
//! a conditional write on the lease counter (and owner, where it matters) as the Java KCL does,
//! so two workers can never both believe they won.

use async_trait::async_trait;

use super::lease::{CheckpointPosition, Lease};

/// A lease-table operation that did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// Someone changed the lease first (another worker took it, or it renewed): the condition on
    /// its counter or owner failed. `current` is the lease as it is now, when the store knows.
    #[error("lease {key} changed under us (another worker holds or took it); current: {current:?}")]
    Conflict {
        /// The lease key.
        key: String,
        /// The lease as stored now.
        current: Option<Box<Lease>>,
    },
    /// The lease does not exist (any more).
    #[error("lease {key} does not exist")]
    NotFound {
        /// The lease key.
        key: String,
    },
    /// A row that is not a valid lease.
    #[error("lease {key} in the table is malformed: {message}")]
    Malformed {
        /// The lease key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// The lease table does not exist (deleted under a running worker, or never created).
    #[error(
        "lease table {table} does not exist: it was deleted or never created (a worker creates it at start; restart the workers to recreate it, or check the table name and region)"
    )]
    TableNotFound {
        /// The table.
        table: String,
        /// The store's error.
        #[source]
        source: Option<kinesis_retry::AwsError>,
    },
    /// The lease table call failed (timeout, network, throttling, permissions...).
    #[error("lease table call failed: {source}")]
    Store {
        /// The AWS error.
        #[from]
        source: kinesis_retry::AwsError,
    },
}

impl LeaseError {
    /// Whether this is a lost conditional write (the lease belongs to someone else now).
    pub fn is_conflict(&self) -> bool {
        matches!(self, LeaseError::Conflict { .. })
    }

    /// Whether retrying the same call may succeed: throttled and transient store failures.
    /// Conflicts, missing leases or tables and malformed rows are fatal for the call.
    pub fn class(&self) -> kinesis_retry::Class {
        match self {
            LeaseError::Store { source } => source.class(),
            _ => kinesis_retry::Class::Fatal,
        }
    }
}

/// Operations on the lease table. Each returns the lease as written.
#[async_trait]
pub trait LeaseStore: std::fmt::Debug + Send + Sync + 'static {
    /// Creates the table if it does not exist (and waits until it can be used).
    async fn ensure_table(&self) -> Result<(), LeaseError>;

    /// Every lease (a consistent read where the store offers one). A row that is not a valid
    /// lease is left out (and logged once with its key and why), so one bad row never stops the
    /// fleet.
    async fn list(&self) -> Result<Vec<Lease>, LeaseError>;

    /// The leases whose `leaseOwner` is `owner`, where the store can find them without reading
    /// every lease (DynamoDB: the `LeaseOwnerToLeaseKeyIndex`, eventually consistent); `None`
    /// when it cannot (then [`list`](Self::list) them).
    async fn owned_by(&self, owner: &str) -> Result<Option<Vec<Lease>>, LeaseError> {
        let _ = owner;
        Ok(None)
    }

    /// One lease.
    async fn get(&self, key: &str) -> Result<Option<Lease>, LeaseError>;

    /// Creates the lease unless its key exists; `Ok(false)` when it existed.
    async fn create_if_absent(&self, lease: &Lease) -> Result<bool, LeaseError>;

    /// Bumps the counter if it is still `lease.counter`, and stores `lease.throughput_kbps`
    /// when set.
    async fn renew(&self, lease: &Lease) -> Result<Lease, LeaseError>;

    /// Makes `owner` the owner if the counter is still `lease.counter` (ending any hand-off).
    async fn take(&self, lease: &Lease, owner: &str) -> Result<Lease, LeaseError>;

    /// Gives the lease up if its actual owner is still `lease`'s: clears the owner, so any worker
    /// may take it at once; or, while a hand-off is under way, clears `checkpointOwner` (the
    /// hand-off is complete and the new owner starts).
    async fn release(&self, lease: &Lease) -> Result<Lease, LeaseError>;

    /// Begins a graceful hand-off (KCL 3.x): `leaseOwner` becomes `new_owner` and
    /// `checkpointOwner` the current owner, if the lease is still owned by `lease.owner` with no
    /// hand-off under way. The counter does not move: the current owner keeps renewing it,
    /// learns of the hand-off from its next renewal, checkpoints and [`release`](Self::release)s.
    async fn hand_off(&self, lease: &Lease, new_owner: &str) -> Result<Lease, LeaseError>;

    /// Stores a checkpoint if the counter is still `lease.counter` and the actual owner (see
    /// [`Lease::actual_owner`]) still `lease`'s.
    async fn checkpoint(
        &self,
        lease: &Lease,
        checkpoint: &CheckpointPosition,
        pending: Option<&CheckpointPosition>,
    ) -> Result<Lease, LeaseError>;

    /// Records the shard's children (at shard end), if the actual owner is still `lease`'s.
    async fn set_child_shards(
        &self,
        lease: &Lease,
        children: &[String],
    ) -> Result<Lease, LeaseError>;

    /// Deletes a lease (cleanup of a finished shard whose children have started).
    async fn delete(&self, key: &str) -> Result<(), LeaseError>;
}
