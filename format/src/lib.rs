//! The wire format shared by the producer (`kpl`) and the consumer (`kcl`): KPL aggregated records,
//! hash keys and sequence numbers. Pure: no async runtime, no AWS SDK, no I/O.
//!
//! - [`AggregateBuilder`] packs user records into one aggregated Kinesis record with exact size
//!   accounting; [`deaggregate`] reads any blob back, passing non-aggregates through as raw, and
//!   [`deaggregate_all`] reads a page of them, checking their digests side by side.
//! - [`HashKey`] maps partition keys and explicit hash keys into the 128-bit key space;
//!   [`HashKeyRange`] is what a shard owns.
//! - [`SequenceNumber`] and [`ExtendedSequenceNumber`] order records within a shard.

mod aggregation;
mod error;
mod hash_key;
mod md5_lanes;
mod proto;
mod sequence;

pub use aggregation::{
    AggregateBuilder, DIGEST_LEN, Deaggregated, FRAMING_LEN, MAGIC, NotAggregated, SubRecord,
    Unsealed, deaggregate, deaggregate_all,
};
pub use error::{HashKeyError, PartitionKeyError, SequenceNumberError};
pub use hash_key::{HashKey, HashKeyRange, MAX_PARTITION_KEY_CHARS, validate_partition_key};
pub use sequence::{ExtendedSequenceNumber, MAX_SEQUENCE_DIGITS, SequenceNumber};
