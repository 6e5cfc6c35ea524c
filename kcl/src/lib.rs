#![doc = include_str!("../README.md")]

mod checkpoint;
mod cleanup;
mod config;
mod coordinator;
mod fan_out;
mod held;
mod jitter;
mod kcl_metrics;
pub mod leases;
mod lifecycle;
mod prefetch;
mod processor;
mod retrieval;
mod shard_sync;
mod stream;
mod streams;
mod worker;

pub use checkpoint::{CheckpointError, Checkpointer, PreparedCheckpoint};
pub use config::{ConfigError, InitialPosition, WorkerConfig};
pub use kinesis_api::StreamRef;
pub use kinesis_retry::{AwsError, AwsErrorKind, Class};
pub use processor::{
    ConsumerRecord, InitializeInput, ProcessRecordsInput, ProcessorError, ProcessorResult,
    RecordProcessor, RecordProcessorFactory,
};
pub use stream::{Batch, RecordStream};
pub use streams::{FormerStreamLeases, StreamSpec, StreamsHandle};
pub use worker::{
    BuildError, ShardPhase, ShardStatus, ShutdownHandle, StatusHandle, Worker, WorkerBuilder,
    WorkerError, WorkerPhase, WorkerStatus,
};
