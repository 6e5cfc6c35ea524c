//! Consumer benchmark against a real endpoint (kinesis-mock from scripts/local-aws.sh): writes N
//! user records (aggregated by kpl, or raw), then times one worker with a no-op processor (it only
//! checkpoints each batch) until it has seen them all. Reports user records/s, CPU-seconds per
//! million user records during consumption, and peak RSS.
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
    let worker_config = WorkerConfig::default()
        .initial_position(InitialPosition::TrimHorizon)
        .take_interval(Duration::from_millis(100))
        .idle_time_between_reads(Duration::from_millis(20));
    let table = format!("kcl-bench-{}", std::process::id());
    let worker = Worker::new(&config, &table, &name, factory, worker_config);
    let handle = worker.shutdown_handle();
    let (cpu_before, started) = (cpu_seconds()?, Instant::now());
    let task = tokio::spawn(worker.run());
    while seen.load(Ordering::Relaxed) < records {
        let notified = progress.notified();
        if seen.load(Ordering::Relaxed) >= records {
            break;
        }
        tokio::time::timeout(Duration::from_secs(600), notified).await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
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
        "consume_s={elapsed:.2} user_records_per_s={:.0}",
        records as f64 / elapsed
    );
    println!(
        "cpu_s={cpu:.2} cpu_s_per_million_user_records={:.3} peak_rss_mib={:.1}",
        cpu / records as f64 * 1e6,
        peak_rss_kib()? as f64 / 1024.0
    );
    Ok(())
}
