//! The KPL aggregated-record format: many user records packed into one Kinesis record.
//!
//! ```text
//! +----------------+-----------------------------------+----------------------------+
//! | F3 89 9A C2    | AggregatedRecord (protobuf bytes) | MD5 of the protobuf bytes  |
//! | 4 bytes magic  | partition_key_table,              | 16 bytes                   |
//! |                | explicit_hash_key_table, records  |                            |
//! +----------------+-----------------------------------+----------------------------+
//! ```
//!
//! [`AggregateBuilder`] writes it, with exact size accounting before each add; [`deaggregate`]
//! reads any blob and says whether it is an aggregate (yielding its user records) or a raw record
//! (saying why), never panicking.

mod decode;
mod encode;
mod size;

pub use decode::{Deaggregated, NotAggregated, SubRecord, deaggregate, deaggregate_all};
pub use encode::{AggregateBuilder, Unsealed};

/// The four bytes every aggregated record starts with.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];

/// The length of the MD5 trailer.
pub const DIGEST_LEN: usize = 16;

/// The bytes an aggregate adds around its protobuf body: magic and digest.
pub const FRAMING_LEN: usize = MAGIC.len() + DIGEST_LEN;
