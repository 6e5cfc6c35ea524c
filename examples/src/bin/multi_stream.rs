//! Multi-stream fleet: two workers of one application share two streams through one lease
//! table, as the Java KCL's multi-stream applications do. Worker one starts on `orders` (read
//! from its oldest record); `clicks` is added to the list while it runs; worker two joins and
//! takes its share by graceful hand-off (the old owner checkpoints first, so nothing is
//! processed twice), balancing by throughput; then `orders` is removed (its processors
//! checkpoint and its leases are released and kept). Prints the lease table at each step.
//!
//! Run against local emulators: `scripts/with-local-aws.sh cargo run -p kinesis-examples --bin multi_stream`.

use std::collections::BTreeMap;
use std::error::Error;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use kcl::leases::{DynamoDbLeaseStore, LeaseStore};
use kcl::{
    Checkpointer, InitialPosition, ProcessRecordsInput, RecordProcessor, RecordProcessorFactory,
    StreamSpec, Worker, WorkerConfig,
};
use rand::Rng;

/// (stream, data) → how many times it was processed.
type Seen = Arc<Mutex<BTreeMap<(String, String), usize>>>;

/// Counts each record per stream, and checkpoints after every batch and when asked to stop.
struct Counter {
    stream: String,
    seen: Seen,
}

#[async_trait]
impl RecordProcessor for Counter {
    async fn process_records(&mut self, input: ProcessRecordsInput<'_>) -> kcl::ProcessorResult {
        {
            let mut seen = self.seen.lock().expect("seen");
            for r in &input.records {
                let data = String::from_utf8_lossy(&r.data).into_owned();
                *seen.entry((self.stream.clone(), data)).or_default() += 1;
            }
        }
        input.checkpointer.checkpoint().await?;
        Ok(())
    }

    async fn shard_ended(&mut self, checkpointer: &Checkpointer) -> kcl::ProcessorResult {
        checkpointer.checkpoint().await?;
        Ok(())
    }

    async fn shutdown_requested(&mut self, checkpointer: &Checkpointer) -> kcl::ProcessorResult {
        let _ = checkpointer.checkpoint().await;
        Ok(())
    }
}

/// A factory that knows each shard's stream (`create_for`).
struct Counters(Seen);

impl RecordProcessorFactory for Counters {
    fn create(&self, _shard_id: &str) -> Box<dyn RecordProcessor> {
        unreachable!("the worker calls create_for")
    }

    fn create_for(&self, stream: &str, _shard_id: &str) -> Box<dyn RecordProcessor> {
        Box::new(Counter {
            stream: stream.to_owned(),
            seen: self.0.clone(),
        })
    }
}

async fn put(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    range: std::ops::Range<usize>,
) -> Result<(), Box<dyn Error>> {
    for i in range {
        kinesis
            .put_record()
            .stream_name(stream)
            .partition_key(format!("user-{}", i % 50))
            .data(aws_sdk_kinesis::primitives::Blob::new(format!(
                "{stream}-{i}"
            )))
            .send()
            .await?;
    }
    Ok(())
}

async fn print_table(store: &DynamoDbLeaseStore, step: &str) -> Result<(), Box<dyn Error>> {
    println!("-- lease table {step}:");
    for lease in store.list().await? {
        println!(
            "   {:<60} owner {:<8} checkpoint {} throughput {:?} KiB/s",
            lease.key,
            lease.owner.as_deref().unwrap_or("-"),
            lease.checkpoint,
            lease.throughput_kbps
        );
    }
    Ok(())
}

/// Waits until `n` distinct records of `stream` were processed (60 s at most).
async fn wait_for(seen: &Seen, stream: &str, n: usize) -> Result<(), Box<dyn Error>> {
    let count = || {
        (seen.lock().expect("seen").keys())
            .filter(|(s, _)| s == stream)
            .count()
    };
    for _ in 0..600 {
        if count() >= n {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("{stream}: {} of {n} records processed", count()).into())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    kinesis_examples::init_logging("warn,kcl=info");
    let config = aws_config::defaults(BehaviorVersion::latest()).load().await;
    let kinesis = aws_sdk_kinesis::Client::new(&config);
    let suffix = format!("{:08x}", rand::rng().random::<u32>());
    let (orders, clicks) = (format!("orders-{suffix}"), format!("clicks-{suffix}"));
    let application = format!("multi-app-{suffix}");
    kinesis_examples::create_stream(&kinesis, &orders, 3).await?;
    kinesis_examples::create_stream(&kinesis, &clicks, 1).await?;
    let store = DynamoDbLeaseStore::new(aws_sdk_dynamodb::Client::new(&config), &application);
    put(&kinesis, &orders, 0..300).await?;

    let seen: Seen = Arc::default();
    let worker = |id: &str, streams: Vec<StreamSpec>| {
        let settings = WorkerConfig::default()
            .worker_id(id)
            .initial_position(InitialPosition::Latest) // streams without their own position
            .take_interval(Duration::from_millis(500))
            .idle_time_between_reads(Duration::from_millis(200))
            .balance_by_throughput(50.0); // graceful hand-off is on by default
        Worker::builder()
            .sdk_config(&config)
            .application_name(&application)
            .streams(streams)
            .processor_factory(Counters(seen.clone()))
            .config(settings)
            .build()
    };
    let one = worker(
        "one",
        vec![StreamSpec::new(&orders).initial_position(InitialPosition::TrimHorizon)],
    )?;
    let one_streams = one.streams_handle().expect("a multi-stream worker");
    let one_stop = one.shutdown_handle();
    let one = tokio::spawn(one.run());
    wait_for(&seen, &orders, 300).await?;
    print_table(&store, "with orders").await?;

    // clicks joins the list while running, from its oldest record.
    let clicks_spec = StreamSpec::new(&clicks).initial_position(InitialPosition::TrimHorizon);
    one_streams.add(clicks_spec.clone());
    put(&kinesis, &clicks, 0..100).await?;
    wait_for(&seen, &clicks, 100).await?;

    // A second worker joins with the same list and takes its share by hand-off.
    let two = worker(
        "two",
        vec![
            StreamSpec::new(&orders).initial_position(InitialPosition::TrimHorizon),
            clicks_spec,
        ],
    )?;
    let two_streams = two.streams_handle().expect("a multi-stream worker");
    let two_stop = two.shutdown_handle();
    let two = tokio::spawn(two.run());
    put(&kinesis, &orders, 300..600).await?;
    put(&kinesis, &clicks, 100..200).await?;
    wait_for(&seen, &orders, 600).await?;
    wait_for(&seen, &clicks, 200).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    print_table(&store, "after worker two joined").await?;

    // orders leaves the list of both: its processors checkpoint, its leases are released.
    one_streams.remove(&orders);
    two_streams.remove(&orders);
    tokio::time::sleep(Duration::from_secs(2)).await;
    print_table(&store, "after orders was removed").await?;

    one_stop.shutdown();
    two_stop.shutdown();
    one.await??;
    two.await??;
    let (distinct, twice) = {
        let seen = seen.lock().expect("seen");
        (seen.len(), seen.values().filter(|n| **n > 1).count())
    };
    println!("processed {distinct} distinct records of 800 ({twice} more than once)");

    for stream in [&orders, &clicks] {
        kinesis.delete_stream().stream_name(stream).send().await?;
    }
    aws_sdk_dynamodb::Client::new(&config)
        .delete_table()
        .table_name(&application)
        .send()
        .await?;
    if distinct != 800 {
        return Err(format!("expected 800 records, processed {distinct}").into());
    }
    Ok(())
}
