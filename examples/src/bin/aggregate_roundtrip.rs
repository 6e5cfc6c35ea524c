//! Demo: aggregate user records with `kinesis-format`, put them into a fresh stream, read them back
//! with GetRecords and deaggregate. Run it through `scripts/demo.sh`, which starts local AWS.

use std::error::Error;
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{ShardIteratorType, StreamStatus};
use bytes::Bytes;
use kinesis_format::{AggregateBuilder, Deaggregated, HashKey, deaggregate};
use rand::Rng;

const USER_RECORDS: usize = 3_000;
const AGGREGATE_LIMIT: usize = 51_200;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let config = aws_config::defaults(BehaviorVersion::latest()).load().await;
    let kinesis = aws_sdk_kinesis::Client::new(&config);
    let stream = format!("demo-{:08x}", rand::rng().random::<u32>());

    kinesis
        .create_stream()
        .stream_name(&stream)
        .shard_count(1)
        .send()
        .await?;
    wait_active(&kinesis, &stream).await?;
    println!("created stream {stream}");

    // Pack user records into aggregates of at most 51,200 bytes; route each aggregate by the
    // hash key of its first user record.
    let started = Instant::now();
    let mut aggregates = Vec::new();
    let mut builder = AggregateBuilder::new();
    let mut first_key = None;
    for i in 0..USER_RECORDS {
        let key = format!("user-{}", i % 37);
        let data = Bytes::from(format!(
            "{{\"event\":{i},\"note\":\"hello from the demo\"}}"
        ));
        if builder.framed_len_with(&key, None, data.len()) > AGGREGATE_LIMIT {
            let full = std::mem::take(&mut builder);
            aggregates.push((first_key.take(), full.len(), full.finish()));
        }
        first_key.get_or_insert_with(|| HashKey::from_partition_key(&key));
        builder.add(&key, None, data);
    }
    aggregates.push((first_key, builder.len(), builder.finish()));

    for (hash_key, count, blob) in &aggregates {
        let put = kinesis
            .put_record()
            .stream_name(&stream)
            .partition_key("a")
            .set_explicit_hash_key(hash_key.map(|k| k.to_string()))
            .data(Blob::new(blob.to_vec()))
            .send()
            .await?;
        println!(
            "put aggregate of {count} user records ({} bytes) as {} on {}",
            blob.len(),
            put.sequence_number(),
            put.shard_id()
        );
    }

    // Read everything back from the one shard and deaggregate.
    let shards = kinesis.list_shards().stream_name(&stream).send().await?;
    let shard_id = shards.shards()[0].shard_id().to_owned();
    let mut iterator = kinesis
        .get_shard_iterator()
        .stream_name(&stream)
        .shard_id(&shard_id)
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await?
        .shard_iterator
        .ok_or("no shard iterator")?;
    let mut user_records = Vec::new();
    loop {
        let page = kinesis
            .get_records()
            .shard_iterator(&iterator)
            .send()
            .await?;
        for record in page.records() {
            match deaggregate(&Bytes::copy_from_slice(record.data().as_ref())) {
                Deaggregated::Aggregated(subs) => user_records.extend(
                    subs.into_iter()
                        .map(|s| (record.sequence_number().to_owned(), s)),
                ),
                Deaggregated::Raw(reason) => println!("raw record ({reason:?})"),
            }
        }
        match page.next_shard_iterator() {
            Some(next) if !page.records().is_empty() => iterator = next.to_owned(),
            _ => break,
        }
    }
    for (sequence, sub) in user_records.iter().take(3).chain(user_records.last()) {
        println!(
            "read {sequence}/{} key={} data={}",
            sub.sub_sequence_number,
            sub.partition_key,
            String::from_utf8_lossy(&sub.data)
        );
    }
    println!(
        "read back {} of {USER_RECORDS} user records from {} Kinesis records in {:?}",
        user_records.len(),
        aggregates.len(),
        started.elapsed()
    );
    kinesis.delete_stream().stream_name(&stream).send().await?;
    if user_records.len() != USER_RECORDS {
        return Err(format!(
            "expected {USER_RECORDS} user records, read {}",
            user_records.len()
        )
        .into());
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
