//! A consumer worker as its own process, for the tests that kill it with SIGKILL:
//! `kcl_worker TABLE STREAM WORKER_ID FAILOVER_MS [DELIVERY_LOG]`. Endpoints come from the
//! environment. With DELIVERY_LOG, every delivered record and every stored checkpoint is appended
//! to that file (see [`integration_tests::delivery_file`]), each batch in one write made before
//! the batch is checkpointed, so a SIGKILL never hides a delivery that was checkpointed.

use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use kcl::{
    Checkpointer, InitialPosition, ProcessRecordsInput, ProcessorResult, RecordProcessor, Worker,
    WorkerConfig,
};

struct CheckpointEveryBatch {
    session: String,
    log: Option<Arc<Mutex<File>>>,
}

impl CheckpointEveryBatch {
    fn write(&self, text: &str) {
        if let Some(file) = &self.log {
            file.lock()
                .expect("log")
                .write_all(text.as_bytes())
                .expect("delivery log write");
        }
    }
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos()
}

#[async_trait]
impl RecordProcessor for CheckpointEveryBatch {
    async fn process_records(&mut self, input: ProcessRecordsInput<'_>) -> ProcessorResult {
        let at = now_nanos();
        let mut lines = String::new();
        for r in &input.records {
            lines += &format!(
                "D\t{}\t{}\t{}\t{}\t{}\t{}\n",
                self.session,
                r.partition_key,
                r.sequence_number,
                r.sub_sequence_number,
                String::from_utf8_lossy(&r.data),
                at
            );
        }
        self.write(&lines);
        if input.checkpointer.checkpoint().await.is_ok()
            && let Some(last) = input.records.last()
        {
            self.write(&format!(
                "C\t{}\t{}\t{}\n",
                self.session, last.sequence_number, last.sub_sequence_number
            ));
        }
        Ok(())
    }

    async fn shard_ended(&mut self, checkpointer: &Checkpointer) -> ProcessorResult {
        checkpointer.checkpoint().await?;
        Ok(())
    }

    async fn shutdown_requested(&mut self, checkpointer: &Checkpointer) -> ProcessorResult {
        let _ = checkpointer.checkpoint().await;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (table, stream, worker_id, failover_ms, log) = match args.as_slice() {
        [t, s, w, f] => (t, s, w, f, None),
        [t, s, w, f, l] => (t, s, w, f, Some(l)),
        _ => {
            return Err(
                "usage: kcl_worker TABLE STREAM WORKER_ID FAILOVER_MS [DELIVERY_LOG]".into(),
            );
        }
    };
    let log = match log {
        Some(path) => Some(Arc::new(Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        ))),
        None => None,
    };
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let worker_config = WorkerConfig::default()
        .worker_id(worker_id)
        .initial_position(InitialPosition::TrimHorizon)
        .failover_time(Duration::from_millis(failover_ms.parse()?))
        .take_interval(Duration::from_millis(200))
        .idle_time_between_reads(Duration::from_millis(50))
        .parent_poll_interval(Duration::from_millis(100))
        .shard_sync_interval(Duration::from_secs(1));
    let sessions = Arc::new(AtomicU64::new(0));
    let (pid, worker) = (std::process::id(), worker_id.clone());
    let factory = move |shard: &str| -> Box<dyn RecordProcessor> {
        let n = sessions.fetch_add(1, Ordering::Relaxed);
        Box::new(CheckpointEveryBatch {
            session: format!("{worker}/{pid}/{n}\t{shard}"),
            log: log.clone(),
        })
    };
    Worker::new(&config, table, stream, factory, worker_config)
        .run()
        .await?;
    Ok(())
}
