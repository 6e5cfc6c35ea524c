//! A consumer worker as its own process, for the failover test that kills it with SIGKILL:
//! `kcl_worker TABLE STREAM WORKER_ID FAILOVER_MS`. Endpoints come from the environment.

use std::time::Duration;

use async_trait::async_trait;
use kcl::{
    Checkpointer, InitialPosition, ProcessRecordsInput, RecordProcessor, Worker, WorkerConfig,
};

struct CheckpointEveryBatch;

#[async_trait]
impl RecordProcessor for CheckpointEveryBatch {
    async fn process_records(&mut self, input: ProcessRecordsInput<'_>) -> kcl::ProcessorResult {
        let _ = input.checkpointer.checkpoint().await;
        Ok(())
    }

    async fn shard_ended(&mut self, checkpointer: &Checkpointer) -> kcl::ProcessorResult {
        let _ = checkpointer.checkpoint().await;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [table, stream, worker_id, failover_ms] = args.as_slice() else {
        return Err("usage: kcl_worker TABLE STREAM WORKER_ID FAILOVER_MS".into());
    };
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let worker_config = WorkerConfig::default()
        .worker_id(worker_id)
        .initial_position(InitialPosition::TrimHorizon)
        .failover_time(Duration::from_millis(failover_ms.parse()?))
        .take_interval(Duration::from_millis(200))
        .idle_time_between_reads(Duration::from_millis(50));
    let factory = |_: &str| -> Box<dyn RecordProcessor> { Box::new(CheckpointEveryBatch) };
    Worker::new(&config, table, stream, factory, worker_config)
        .run()
        .await?;
    Ok(())
}
