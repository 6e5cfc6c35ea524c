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

mod conditional;
mod dynamodb;
mod item;
mod lease;
mod memory;
mod store;

pub use dynamodb::DynamoDbLeaseStore;
pub use lease::{CheckpointPosition, Lease};
pub use memory::MemoryLeaseStore;
pub use store::{LeaseError, LeaseStore};
