//! One shard's processing, as an explicit state machine. The states carry their own data and
//! [`state::transition`] (pure, tested transition by transition) moves between them;
//! `shard_consumer.rs` does each state's I/O and reports what happened as an event.
//!
//! ```text
//! WaitingOnParents ─ParentsDone─▶ Initializing ─ReadsStarted─▶ Processing ─Delivered─┐
//!                                   ▲    │ StartFailed (retry)     │  ▲              │
//!                                   │    └──────────┘              │  └──────────────┘
//!                                   └──────────── ReadsStopped ────┤
//!                                                                  │ Delivered, last batch
//!                                                                  ▼
//!                   Finished ◀─EndCheckpointed─ ShardEnded ◀─┘ (EndNotCheckpointed: ask again)
//!
//! any state ─LeaseLost / ShutdownRequested / KinesisFatal─▶ Stopping (lease_lost or
//!   shutdown_requested) ─Notified─▶ end; before `initialize` ran: the end at once, no call.
//! any state ─ProcessorFailed─▶ end (the worker restarts the shard after a back-off).
//! ```

mod shard_consumer;
mod slow_call;
mod state;

pub(crate) use shard_consumer::ShardConsumer;
pub(crate) use state::ShardOutcome;
