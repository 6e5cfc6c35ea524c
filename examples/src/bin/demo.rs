//! Demo: a consumer worker (kcl) and a producer (kpl) on a fresh stream. The producer puts user
//! records (aggregated KPL-style); the worker leases the shards, deaggregates, processes and
//! checkpoints them; then it shuts down gracefully (also at SIGTERM or Ctrl-C). Run it through
//! `scripts/demo.sh`, which starts local AWS. The libraries log through `tracing` (`RUST_LOG`
//! overrides the default: warnings, and the workers' and producer's info lines).

use std::collections::BTreeMap;
use std::error::Error;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use kcl::{
    Checkpointer, InitialPosition, ProcessRecordsInput, RecordProcessor, Worker, WorkerConfig,
};
use kpl::{Producer, ProducerConfig, UserRecord};
use rand::Rng;
use tokio::sync::Notify;

const USER_RECORDS: usize = 10_000;
const SHARDS: i32 = 2;

/// Counts what each shard delivered and checkpoints after every batch.
struct Counter {
    shard: String,
    counts: Arc<Mutex<BTreeMap<String, usize>>>,
    progress: Arc<Notify>,
}

#[async_trait]
impl RecordProcessor for Counter {
    async fn process_records(&mut self, input: ProcessRecordsInput<'_>) -> kcl::ProcessorResult {
        if let Some(first) = input.records.first() {
            println!(
                "[{}] {} records from {}/{}: {}",
                self.shard,
                input.records.len(),
                first.sequence_number,
                first.sub_sequence_number,
                String::from_utf8_lossy(&first.data)
            );
        }
        *self
            .counts
            .lock()
            .expect("counts")
            .entry(self.shard.clone())
            .or_default() += input.records.len();
        if let Err(e) = input.checkpointer.checkpoint().await {
            eprintln!("[{}] checkpoint failed: {e}", self.shard);
        }
        self.progress.notify_waiters();
        Ok(())
    }

    async fn shard_ended(&mut self, checkpointer: &Checkpointer) -> kcl::ProcessorResult {
        let _ = checkpointer.checkpoint().await;
        Ok(())
    }

    async fn shutdown_requested(&mut self, checkpointer: &Checkpointer) -> kcl::ProcessorResult {
        let _ = checkpointer.checkpoint().await;
        println!(
            "[{}] shutdown requested: final checkpoint written",
            self.shard
        );
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    kinesis_examples::init_logging("warn,kcl=info,kpl=info");
    let config = aws_config::defaults(BehaviorVersion::latest()).load().await;
    let kinesis = aws_sdk_kinesis::Client::new(&config);
    let suffix = format!("{:08x}", rand::rng().random::<u32>());
    let (stream, application) = (format!("demo-{suffix}"), format!("demo-app-{suffix}"));
    kinesis_examples::create_stream(&kinesis, &stream, SHARDS).await?;
    println!("created stream {stream} with {SHARDS} shards; lease table {application}");

    // The consumer: one worker, reading from the oldest record.
    let counts = Arc::new(Mutex::new(BTreeMap::new()));
    let progress = Arc::new(Notify::new());
    let factory = {
        let (counts, progress) = (counts.clone(), progress.clone());
        move |shard: &str| -> Box<dyn RecordProcessor> {
            Box::new(Counter {
                shard: shard.to_owned(),
                counts: counts.clone(),
                progress: progress.clone(),
            })
        }
    };
    let worker_config = WorkerConfig::default()
        .initial_position(InitialPosition::TrimHorizon)
        .take_interval(Duration::from_millis(500))
        .idle_time_between_reads(Duration::from_millis(200));
    let worker = Worker::builder()
        .sdk_config(&config)
        .application_name(&application)
        .stream(&stream)
        .processor_factory(factory)
        .config(worker_config)
        .build()?;
    let shutdown = worker.shutdown_handle();
    let worker = tokio::spawn(worker.run());
    // SIGTERM or Ctrl-C: the worker shuts down gracefully (final checkpoints, leases released).
    let signalled = Arc::new(Notify::new());
    tokio::spawn({
        let (shutdown, signalled) = (shutdown.clone(), signalled.clone());
        async move {
            kinesis_examples::shutdown_signal().await;
            eprintln!("signal received: shutting down gracefully");
            shutdown.shutdown();
            signalled.notify_one();
        }
    });

    // The producer: every put returns the record's own future.
    let started = Instant::now();
    let producer = Producer::new(&config, ProducerConfig::default())?;
    let mut results = Vec::with_capacity(USER_RECORDS);
    for i in 0..USER_RECORDS {
        let data = format!("{{\"event\":{i},\"user\":\"user-{}\"}}", i % 100);
        results.push(
            producer
                .put(UserRecord::new(
                    stream.as_str(),
                    format!("user-{}", i % 100),
                    data,
                ))
                .await?,
        );
    }
    let first = results.remove(0).await?;
    println!(
        "first user record stored on {} at {}/{} after {} attempt(s)",
        first.shard_id(),
        first.sequence_number(),
        first.sub_sequence_number(),
        first.attempts().len()
    );
    for result in results {
        result.await?;
    }
    let stats = producer.stats();
    producer.shutdown().await;
    println!(
        "produced {USER_RECORDS} user records as {} Kinesis records in {} PutRecords calls ({:?})",
        stats.kinesis_records_put,
        stats.put_records_calls,
        started.elapsed()
    );

    // Wait until the consumer has seen everything, then shut it down gracefully.
    let consumed = || counts.lock().expect("counts").values().sum::<usize>();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while consumed() < USER_RECORDS {
        let notified = progress.notified();
        if consumed() >= USER_RECORDS {
            break;
        }
        tokio::select! {
            () = notified => {}
            () = signalled.notified() => {
                worker.await??;
                return Err(format!("interrupted after consuming {} of {USER_RECORDS} records", consumed()).into());
            }
            () = tokio::time::sleep_until(deadline) => {
                return Err(format!("consumed only {} of {USER_RECORDS} records", consumed()).into());
            }
        }
    }
    shutdown.shutdown();
    worker.await??;
    println!(
        "consumed {} of {USER_RECORDS} user records: {:?} ({:?} since the first put)",
        consumed(),
        counts.lock().expect("counts"),
        started.elapsed()
    );

    kinesis.delete_stream().stream_name(&stream).send().await?;
    aws_sdk_dynamodb::Client::new(&config)
        .delete_table()
        .table_name(&application)
        .send()
        .await?;
    if consumed() != USER_RECORDS {
        return Err(format!("expected {USER_RECORDS} records, consumed {}", consumed()).into());
    }
    Ok(())
}
