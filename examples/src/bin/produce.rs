//! Demo: produce user records into a fresh stream with `kpl`, then read every shard back with
//! GetRecords and deaggregate with `kinesis-format`. Run it through `scripts/demo.sh`, which starts
//! local AWS.

use std::error::Error;
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use aws_sdk_kinesis::types::{ShardIteratorType, StreamStatus};
use bytes::Bytes;
use kinesis_format::{Deaggregated, deaggregate};
use kpl::{Producer, ProducerConfig, UserRecord};
use rand::Rng;

const USER_RECORDS: usize = 10_000;
const SHARDS: i32 = 2;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let config = aws_config::defaults(BehaviorVersion::latest()).load().await;
    let kinesis = aws_sdk_kinesis::Client::new(&config);
    let stream = format!("demo-{:08x}", rand::rng().random::<u32>());
    kinesis
        .create_stream()
        .stream_name(&stream)
        .shard_count(SHARDS)
        .send()
        .await?;
    wait_active(&kinesis, &stream).await?;
    println!("created stream {stream} with {SHARDS} shards");

    // Produce: each put returns the record's own future.
    let producer = Producer::new(&config, ProducerConfig::default())?;
    let started = Instant::now();
    let mut results = Vec::with_capacity(USER_RECORDS);
    for i in 0..USER_RECORDS {
        let data = format!("{{\"event\":{i},\"user\":\"user-{}\"}}", i % 100);
        let record = UserRecord::new(stream.as_str(), format!("user-{}", i % 100), data);
        results.push(producer.put(record).await?);
    }
    let mut ok = 0;
    for (i, result) in results.into_iter().enumerate() {
        let outcome = result.await?;
        if i < 3 || i == USER_RECORDS - 1 {
            println!(
                "put user record {i}: {} {}/{} (aggregated: {}, attempts: {})",
                outcome.shard_id,
                outcome.sequence_number,
                outcome.sub_sequence_number,
                outcome.aggregated,
                outcome.attempts.len()
            );
        }
        ok += 1;
    }
    let stats = producer.stats();
    producer.shutdown().await;
    println!(
        "produced {ok} user records as {} Kinesis records in {} PutRecords calls ({:?})",
        stats.kinesis_records_put,
        stats.put_records_calls,
        started.elapsed()
    );

    // Read back every shard and deaggregate.
    let mut read = 0;
    let shards = kinesis.list_shards().stream_name(&stream).send().await?;
    for shard in shards.shards() {
        let mut iterator = kinesis
            .get_shard_iterator()
            .stream_name(&stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await?
            .shard_iterator;
        let mut in_shard = 0;
        while let Some(it) = iterator {
            let page = kinesis.get_records().shard_iterator(it).send().await?;
            for record in page.records() {
                in_shard += match deaggregate(&Bytes::copy_from_slice(record.data().as_ref())) {
                    Deaggregated::Aggregated(subs) => subs.len(),
                    Deaggregated::Raw(_) => 1,
                };
            }
            iterator = if page.records().is_empty() {
                None
            } else {
                page.next_shard_iterator
            };
        }
        println!("read {in_shard} user records from {}", shard.shard_id());
        read += in_shard;
    }
    kinesis.delete_stream().stream_name(&stream).send().await?;
    println!("read back {read} of {USER_RECORDS} user records");
    if read != USER_RECORDS {
        return Err(format!("expected {USER_RECORDS} user records, read {read}").into());
    }
    Ok(())
}

async fn wait_active(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Result<(), Box<dyn Error>> {
    for _ in 0..600 {
        let summary = kinesis
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await?;
        if summary
            .stream_description_summary()
            .is_some_and(|d| d.stream_status() == &StreamStatus::Active)
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("stream {stream} did not become ACTIVE").into())
}
