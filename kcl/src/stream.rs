//! A stream named by name or by ARN: the boundary crate's type.

pub use kinesis_api::StreamRef;
