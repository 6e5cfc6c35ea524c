//! One shard's processing, as an explicit state machine:
//!
//! ```text
//! WaitingOnParents ──(every parent at SHARD_END, or gone)──▶ Initializing ──▶ Processing
//!        │                                                                     │
//!        │            ┌───────────── next shard iterator is null ◀─────────────┤
//!        │            ▼                                                        │
//!        │        ShardEnded ── processor checkpoints SHARD_END ─▶ ShutDown     │
//!        │                                                                     │
//!        ├──────────── lease lost (renewal or checkpoint conflict) ──▶ LeaseLost ─▶ ShutDown
//!        └──────────── worker shutting down gracefully ──▶ ShutdownRequested ─▶ ShutDown
//! ```

mod shard_consumer;
mod state;

pub(crate) use shard_consumer::{ShardConsumer, ShardOutcome};
pub use state::ShardState;
