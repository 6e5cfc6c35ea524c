//! Consumer benchmark against a real endpoint (kinesis-mock from scripts/local-aws.sh): writes N
//! user records (aggregated by kpl, or raw), then, in one run:
//! 1. a bare drain: every shard read concurrently with GetShardIterator(TRIM_HORIZON) and
//!    GetRecords until empty, records deaggregated and counted (the endpoint's own ceiling);
//! 2. a worker on an existing lease table (a first worker synced it and stopped without
//!    checkpointing), with a no-op processor that checkpoints each batch: the time from `run()` to
//!    its first record and to its last.
//!
//! Reports both times and their ratio, user records/s, CPU-seconds per million user records during
//! consumption, and peak RSS.
//!
//! ```text
//! kcl_bench [--records N] [--size BYTES] [--shards N] [--raw]
//! ```

use std::error::Error;

use kinesis_examples::proc_stats::{cpu_seconds, peak_rss_kib};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use bytes::Bytes;
use kcl::{
    Checkpointer, InitialPosition, ProcessRecordsInput, RecordProcessor, Worker, WorkerConfig,
};
use kpl::{Producer, ProducerConfig, UserRecord};
use tokio::sync::Notify;

struct NoOp {
    seen: Arc<AtomicUsize>,
    progress: Arc<Notify>,
}

#[async_trait]
impl RecordProcessor for NoOp {
    async fn process_records(&mut self, input: ProcessRecordsInput<'_>) -> kcl::ProcessorResult {
        self.seen.fetch_add(input.records.len(), Ordering::Relaxed);
        let _ = input.checkpointer.checkpoint().await;
        self.progress.notify_waiters();
        Ok(())
    }

    async fn shard_ended(&mut self, checkpointer: &Checkpointer) -> kcl::ProcessorResult {
        let _ = checkpointer.checkpoint().await;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    // Warnings by default; RUST_LOG=kcl=debug shows where the time goes.
    kinesis_examples::init_logging("warn");
    let (mut records, mut size, mut shards, mut raw) = (200_000usize, 100usize, 4i32, false);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--records" => records = args.next().ok_or("--records N")?.parse()?,
            "--size" => size = args.next().ok_or("--size BYTES")?.parse()?,
            "--shards" => shards = args.next().ok_or("--shards N")?.parse()?,
            "--raw" => raw = true,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    let config = aws_config::defaults(BehaviorVersion::latest()).load().await;
    let kinesis = aws_sdk_kinesis::Client::new(&config);
    let name = format!("kcl-bench-{}", std::process::id());
    kinesis_examples::create_stream(&kinesis, &name, shards).await?;

    // kinesis-mock serves one call at a time: few calls in flight, long timeouts.
    let producer_config = ProducerConfig::default()
        .aggregation_enabled(!raw)
        .max_concurrent_requests(2)
        .request_timeout(Duration::from_secs(60))
        .record_ttl(Duration::from_secs(600));
    let producer = Producer::new(&config, producer_config)?;
    let data = Bytes::from(vec![b'x'; size]);
    let stream: Arc<str> = Arc::from(name.as_str());
    let (tx, mut rx) = tokio::sync::mpsc::channel::<kpl::PutFuture>(65_536);
    let waiter = tokio::spawn(async move {
        while let Some(f) = rx.recv().await {
            f.await.expect("stored");
        }
    });
    for i in 0..records {
        tx.send(
            producer
                .put(UserRecord::new(
                    stream.clone(),
                    format!("{i:016x}"),
                    data.clone(),
                ))
                .await?,
        )
        .await?;
    }
    drop(tx);
    waiter.await?;
    let kinesis_records = producer.stats().kinesis_records_put;
    producer.shutdown().await;

    let table = format!("kcl-bench-{}", std::process::id());
    let worker_config = WorkerConfig::default()
        .initial_position(InitialPosition::TrimHorizon)
        .take_interval(Duration::from_millis(100))
        .idle_time_between_reads(Duration::from_millis(20));
    // One record per call: the emulator serves one call at a time, and big pages abandoned at
    // the warm-up's shutdown would still hold it when the measured worker starts.
    warm_lease_table(&config, &table, &name, worker_config.clone().max_records(1)).await?;
    let drain_s = bare_drain(&kinesis, &name).await?;

    let seen = Arc::new(AtomicUsize::new(0));
    let progress = Arc::new(Notify::new());
    let factory = {
        let (seen, progress) = (seen.clone(), progress.clone());
        move |_: &str| -> Box<dyn RecordProcessor> {
            Box::new(NoOp {
                seen: seen.clone(),
                progress: progress.clone(),
            })
        }
    };
    let worker = Worker::new(&config, &table, &name, factory, worker_config);
    let handle = worker.shutdown_handle();
    let (cpu_before, started) = (cpu_seconds()?, Instant::now());
    tracing::info!("the measured worker starts");
    let task = tokio::spawn(worker.run());
    let mut first = None;
    while seen.load(Ordering::Relaxed) < records {
        if first.is_none() && seen.load(Ordering::Relaxed) > 0 {
            first = Some(started.elapsed().as_secs_f64());
            tracing::info!("the measured worker's first records");
        }
        let notified = progress.notified();
        if seen.load(Ordering::Relaxed) >= records {
            break;
        }
        tokio::time::timeout(Duration::from_secs(600), notified).await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let first = first.unwrap_or(elapsed);
    let cpu = cpu_seconds()? - cpu_before;
    handle.shutdown();
    task.await??;
    kinesis.delete_stream().stream_name(&name).send().await?;
    aws_sdk_dynamodb::Client::new(&config)
        .delete_table()
        .table_name(&table)
        .send()
        .await?;

    println!(
        "records={records} size={size}B {} shards={shards} kinesis_records={kinesis_records}",
        if raw { "raw" } else { "aggregated" }
    );
    println!(
        "bare_drain_s={drain_s:.2} first_record_s={first:.3} consume_s={elapsed:.2} consume_vs_drain={:.2} user_records_per_s={:.0}",
        elapsed / drain_s,
        records as f64 / elapsed
    );
    println!(
        "cpu_s={cpu:.2} cpu_s_per_million_user_records={:.3} peak_rss_mib={:.1}",
        cpu / records as f64 * 1e6,
        peak_rss_kib()? as f64 / 1024.0
    );
    Ok(())
}

/// Reads every shard of `stream` from its start, concurrently, with nothing but GetShardIterator
/// and GetRecords, until each answers no records and no lag; returns the seconds it took.
async fn bare_drain(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Result<f64, Box<dyn Error>> {
    let shards = kinesis.list_shards().stream_name(stream).send().await?;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for shard in shards.shards() {
        let (kinesis, stream, shard) = (
            kinesis.clone(),
            stream.to_owned(),
            shard.shard_id().to_owned(),
        );
        tasks.spawn(async move {
            let mut iterator = kinesis
                .get_shard_iterator()
                .stream_name(&stream)
                .shard_id(&shard)
                .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
                .send()
                .await?
                .shard_iterator
                .ok_or("no iterator")?;
            let mut user_records = 0usize;
            loop {
                let page = kinesis
                    .get_records()
                    .shard_iterator(&iterator)
                    .limit(10_000)
                    .send()
                    .await?;
                for r in page.records() {
                    let blob = Bytes::copy_from_slice(r.data().as_ref());
                    user_records += match kinesis_format::deaggregate(&blob) {
                        kinesis_format::Deaggregated::Aggregated(sub) => sub.len(),
                        kinesis_format::Deaggregated::Raw(_) => 1,
                    };
                }
                if page.records().is_empty() && page.millis_behind_latest() == Some(0) {
                    return Ok::<usize, Box<dyn Error + Send + Sync>>(user_records);
                }
                match page.next_shard_iterator {
                    Some(next) => iterator = next,
                    None => return Ok(user_records),
                }
            }
        });
    }
    let mut total = 0;
    while let Some(done) = tasks.join_next().await {
        total += done?.map_err(|e| e.to_string())?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!("bare drain: {total} user records in {elapsed:.2} s");
    Ok(elapsed)
}

/// Never checkpoints; counts what it saw.
struct Silent(Arc<AtomicUsize>);

#[async_trait]
impl RecordProcessor for Silent {
    async fn process_records(&mut self, input: ProcessRecordsInput<'_>) -> kcl::ProcessorResult {
        self.0.fetch_add(input.records.len(), Ordering::Relaxed);
        Ok(())
    }

    async fn shard_ended(&mut self, _: &Checkpointer) -> kcl::ProcessorResult {
        Ok(())
    }
}

/// Makes the lease table and its leases exist, as a deployment restarting finds them: a worker
/// runs until it has read something, without checkpointing, and shuts down (releasing its leases).
async fn warm_lease_table(
    config: &aws_config::SdkConfig,
    table: &str,
    stream: &str,
    worker_config: WorkerConfig,
) -> Result<(), Box<dyn Error>> {
    let seen = Arc::new(AtomicUsize::new(0));
    let factory = {
        let seen = seen.clone();
        move |_: &str| -> Box<dyn RecordProcessor> { Box::new(Silent(seen.clone())) }
    };
    let worker = Worker::new(config, table, stream, factory, worker_config);
    let handle = worker.shutdown_handle();
    let task = tokio::spawn(worker.run());
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.load(Ordering::Relaxed) == 0 {
        if Instant::now() > deadline {
            return Err("the warm-up worker read nothing in 120 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    handle.shutdown();
    task.await??;
    Ok(())
}
