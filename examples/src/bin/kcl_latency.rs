//! Put-to-process latency of the consumer, polling against enhanced fan-out, in one run against a
//! real endpoint (kinesis-mock from scripts/local-aws.sh): for each mode, a worker with default
//! settings reads a fresh 4-shard stream while records are put one at a time at a steady rate,
//! each carrying its put time; the processor notes when it got each. Prints p50, p99 and max.
//!
//! ```text
//! kcl_latency [--records N] [--rate PER_SECOND]
//! ```

use std::error::Error;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_sdk_kinesis::primitives::Blob;
use kcl::{
    Checkpointer, InitialPosition, ProcessRecordsInput, ProcessorResult, RecordProcessor, Worker,
    WorkerConfig,
};

fn now_micros() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros()
}

/// Notes each record's put-to-process latency (its data is its put time in microseconds).
struct Timer(Arc<Mutex<Vec<u128>>>);

#[async_trait]
impl RecordProcessor for Timer {
    async fn process_records(&mut self, input: ProcessRecordsInput<'_>) -> ProcessorResult {
        let now = now_micros();
        let mut latencies = self.0.lock().expect("latencies");
        for r in &input.records {
            if let Ok(put) = String::from_utf8_lossy(&r.data).parse::<u128>() {
                latencies.push(now.saturating_sub(put));
            }
        }
        Ok(())
    }

    async fn shard_ended(&mut self, checkpointer: &Checkpointer) -> ProcessorResult {
        checkpointer.checkpoint().await?;
        Ok(())
    }
}

async fn measure(
    config: &aws_config::SdkConfig,
    fan_out: bool,
    records: usize,
    rate: u64,
) -> Result<Vec<u128>, Box<dyn Error>> {
    let kinesis = aws_sdk_kinesis::Client::new(config);
    let name = format!(
        "kcl-latency-{}-{}",
        if fan_out { "efo" } else { "polling" },
        std::process::id()
    );
    kinesis_examples::create_stream(&kinesis, &name, 4).await?;
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let factory = {
        let latencies = latencies.clone();
        move |_: &str| -> Box<dyn RecordProcessor> { Box::new(Timer(latencies.clone())) }
    };
    // Defaults, but for reading from the oldest record (so nothing put is missed) and taking
    // leases at once.
    let mut worker_config = WorkerConfig::default()
        .initial_position(InitialPosition::TrimHorizon)
        .take_interval(Duration::from_millis(200));
    if fan_out {
        worker_config = worker_config.enhanced_fan_out(&name);
    }
    let worker = Worker::builder()
        .sdk_config(config)
        .application_name(&name)
        .stream(&name)
        .processor_factory(factory)
        .config(worker_config)
        .build()?;
    let status = worker.status_handle();
    let handle = worker.shutdown_handle();
    let running = tokio::spawn(worker.run());
    // Wait until every shard is being read.
    while status.snapshot().shards.len() < 4 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    for i in 0..records {
        tick.tick().await;
        kinesis
            .put_record()
            .stream_name(&name)
            .partition_key(format!("k{i}"))
            .data(Blob::new(now_micros().to_string()))
            .send()
            .await?;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while latencies.lock().expect("latencies").len() < records {
        if tokio::time::Instant::now() > deadline {
            return Err("not every record was processed within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    handle.shutdown();
    running.await??;
    kinesis
        .delete_stream()
        .stream_name(&name)
        .enforce_consumer_deletion(true)
        .send()
        .await?;
    aws_sdk_dynamodb::Client::new(config)
        .delete_table()
        .table_name(&name)
        .send()
        .await?;
    let mut latencies = std::mem::take(&mut *latencies.lock().expect("latencies"));
    latencies.sort_unstable();
    Ok(latencies)
}

fn percentile(sorted: &[u128], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or(0) as f64 / 1000.0
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    kinesis_examples::init_logging("warn");
    let (mut records, mut rate) = (1_000usize, 100u64);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--records" => records = args.next().ok_or("--records N")?.parse()?,
            "--rate" => rate = args.next().ok_or("--rate PER_SECOND")?.parse()?,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    let config = aws_config::defaults(BehaviorVersion::latest()).load().await;
    for fan_out in [false, true] {
        let sorted = measure(&config, fan_out, records, rate).await?;
        println!(
            "mode={} records={records} rate={rate}/s p50_ms={:.1} p99_ms={:.1} max_ms={:.1}",
            if fan_out {
                "enhanced-fan-out"
            } else {
                "polling"
            },
            percentile(&sorted, 0.50),
            percentile(&sorted, 0.99),
            percentile(&sorted, 1.0),
        );
    }
    Ok(())
}
