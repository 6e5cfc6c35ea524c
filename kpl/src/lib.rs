#![doc = include_str!("../README.md")]

mod config;
mod error;
mod kinesis;
mod pipeline;
mod producer;
mod record;
mod stats;

pub use config::{MAX_RECORD_SIZE_CEILING, MAX_REQUEST_SIZE, ProducerConfig};
pub use error::{ConfigError, PutError, PutErrorKind, SubmitError, SubmitErrorKind};
pub use producer::{Producer, PutFuture};
pub use record::{Attempt, AttemptError, PutOutcome, UserRecord};
pub use stats::ProducerStats;
