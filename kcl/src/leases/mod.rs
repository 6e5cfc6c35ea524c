//! Leases: who processes which shard, and where each shard's processing stands.
//!
//! ```text
//!            create_if_absent            take (counter = seen)
//!   (none) ───────────────────▶ unowned ───────────────────────▶ owned by W
//!                                  ▲                              │  │  ▲
//!                                  │ release (owner = W)          │  │  │ renew (counter = seen)
//!                                  └──────────────────────────────┘  │  │ checkpoint (counter, owner)
//!                                                                    │  └─┘
//!            take by V when W's counter has not moved for the        │
//!            failover time (expired) or to balance load (steal) ◀────┘
//! ```
//!
//! A steal is a graceful hand-off where enabled (the default): `hand_off` makes V the owner and
//! W the checkpoint owner (still the actual owner, renewing and checkpointing); W's `release`
//! then clears the checkpoint owner and V takes the lease. See `coordinator/handoff.rs`.

mod conditional;
mod dynamodb;
mod item;
mod lease;
mod memory;
mod owner_index;
mod store;

pub use dynamodb::DynamoDbLeaseStore;
pub use lease::{CheckpointPosition, Lease};
pub use memory::MemoryLeaseStore;
pub use owner_index::OWNER_INDEX;
pub use store::{LeaseError, LeaseStore};
