//! What the in-memory worker tests share: a quick worker configuration, a processor that
//! checkpoints everything, numbered records put one at a time, and a split of a shard in half.

#![allow(dead_code)] // each test binary uses a part

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use kcl::{
    Checkpointer, InitialPosition, ProcessRecordsInput, ProcessorResult, RecordProcessor,
    WorkerConfig,
};
use kinesis_api::memory::MemoryKinesis;
use kinesis_api::{Kinesis, PutEntry, PutResult, Shard, ShardFilter, StreamRef};
use kinesis_format::HashKey;

/// Worker "w" reading from the oldest records, with short intervals for the paused clock.
pub(crate) fn quick_config() -> WorkerConfig {
    WorkerConfig::default()
        .worker_id("w")
        .jitter_seed(3)
        .initial_position(InitialPosition::TrimHorizon)
        .take_interval(Duration::from_millis(200))
        .idle_time_between_reads(Duration::from_millis(200))
        .parent_poll_interval(Duration::from_millis(100))
}

/// A processor that checkpoints every batch, its shard's end, and when asked to stop.
pub(crate) struct Checkpointing;

#[async_trait]
impl RecordProcessor for Checkpointing {
    async fn process_records(&mut self, input: ProcessRecordsInput<'_>) -> ProcessorResult {
        input.checkpointer.checkpoint().await?;
        Ok(())
    }

    async fn shard_ended(&mut self, checkpointer: &Checkpointer) -> ProcessorResult {
        checkpointer.checkpoint().await?;
        Ok(())
    }

    async fn shutdown_requested(&mut self, checkpointer: &Checkpointer) -> ProcessorResult {
        checkpointer.checkpoint().await?;
        Ok(())
    }
}

/// Puts records `from..from + n` into stream "s", one call each, in order (data: the number; key:
/// `key-{i % keys}`), retrying each until stored; `pause` after each.
pub(crate) async fn put_numbered(
    kinesis: &MemoryKinesis,
    from: usize,
    n: usize,
    keys: usize,
    pause: Duration,
) {
    for i in from..from + n {
        let entry = PutEntry {
            partition_key: format!("key-{}", i % keys),
            explicit_hash_key: None,
            data: Bytes::from(i.to_string()),
        };
        // Until stored: faults may refuse a call or throttle the entry.
        while !matches!(
            kinesis
                .put_records(&StreamRef::new("s"), vec![entry.clone()])
                .await
                .as_deref(),
            Ok([PutResult::Stored { .. }])
        ) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(pause).await;
    }
}

/// Splits the `index`-th open shard of stream "s" in the middle of its range; returns it.
pub(crate) async fn split_in_half(kinesis: &MemoryKinesis, index: usize) -> Shard {
    let shard = kinesis
        .list_shards(&StreamRef::new("s"), ShardFilter::Open)
        .await
        .unwrap()
        .remove(index);
    let middle = HashKey(shard.range.start.0 + (shard.range.end.0 - shard.range.start.0) / 2);
    kinesis.split_shard("s", &shard.id, middle).unwrap();
    shard
}
