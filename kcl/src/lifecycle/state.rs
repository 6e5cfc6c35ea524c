//! The states of a shard consumer.

/// Where one shard's processing stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ShardState {
    /// A parent shard has not been processed to its end yet.
    WaitingOnParents,
    /// The processor is being initialised.
    Initializing,
    /// Records are being read and processed.
    Processing,
    /// The shard was read to its end; the processor must checkpoint SHARD_END.
    ShardEnded,
    /// Another worker took the lease.
    LeaseLost,
    /// The worker is shutting down gracefully.
    ShutdownRequested,
    /// Done.
    ShutDown,
}
