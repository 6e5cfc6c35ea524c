//! Graceful lease hand-off on the in-memory Kinesis and lease store, under the paused clock: a
//! worker joining a busy one takes its share without a record being processed twice, even by a
//! processor that checkpoints only when asked to stop; and a processor that never stops loses
//! its lease after the hand-off timeout instead of holding the shard forever.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;

use async_trait::async_trait;
use common::put_numbered;
use kcl::leases::{LeaseStore, MemoryLeaseStore};
use kcl::{
    Checkpointer, InitialPosition, ProcessRecordsInput, ProcessorResult, RecordProcessor, Worker,
    WorkerConfig,
};
use kinesis_api::memory::MemoryKinesis;

/// (worker, shard, record number) per delivery.
type Log = Arc<Mutex<Vec<(String, String, usize)>>>;

/// Checkpoints only at shard end and when asked to stop: everything it processed since it
/// started would be processed again by a worker that took its lease without asking.
struct Lazy {
    worker: String,
    shard: String,
    log: Log,
    /// Never returns from `shutdown_requested`.
    stuck: bool,
}

#[async_trait]
impl RecordProcessor for Lazy {
    async fn process_records(&mut self, input: ProcessRecordsInput<'_>) -> ProcessorResult {
        let mut log = self.log.lock().unwrap();
        for r in &input.records {
            let n = String::from_utf8_lossy(&r.data).parse().unwrap();
            log.push((self.worker.clone(), self.shard.clone(), n));
        }
        Ok(())
    }

    async fn shard_ended(&mut self, checkpointer: &Checkpointer) -> ProcessorResult {
        checkpointer.checkpoint().await?;
        Ok(())
    }

    async fn shutdown_requested(&mut self, checkpointer: &Checkpointer) -> ProcessorResult {
        if self.stuck {
            std::future::pending::<()>().await;
        }
        checkpointer.checkpoint().await?;
        Ok(())
    }
}

fn worker(
    id: &str,
    kinesis: &Arc<MemoryKinesis>,
    store: &Arc<MemoryLeaseStore>,
    log: &Log,
    configure: impl FnOnce(WorkerConfig) -> WorkerConfig,
    stuck: bool,
) -> Worker {
    let factory = {
        let (log, id) = (log.clone(), id.to_owned());
        move |shard: &str| -> Box<dyn RecordProcessor> {
            Box::new(Lazy {
                worker: id.clone(),
                shard: shard.to_owned(),
                log: log.clone(),
                stuck,
            })
        }
    };
    let config = WorkerConfig::default()
        .worker_id(id)
        .jitter_seed(7)
        .initial_position(InitialPosition::TrimHorizon)
        .failover_time(Duration::from_millis(1500))
        .take_interval(Duration::from_millis(200))
        .idle_time_between_reads(Duration::from_millis(100));
    Worker::with_kinesis(
        kinesis.clone(),
        store.clone(),
        "s",
        factory,
        configure(config),
    )
}

/// Runs worker "a" alone on 4 shards, then "b" joins while records keep coming; returns the log
/// once every record was delivered, with how many leases each worker owns at the end.
async fn a_then_b(
    configure: impl Fn(WorkerConfig) -> WorkerConfig,
    a_stuck: bool,
) -> (Log, HashMap<String, usize>) {
    let kinesis = Arc::new(MemoryKinesis::default());
    kinesis.create_stream("s", 4);
    let store = Arc::new(MemoryLeaseStore::new());
    let log: Log = Arc::default();
    let a = worker("a", &kinesis, &store, &log, &configure, a_stuck);
    let (a_stop, a_task) = (a.shutdown_handle(), tokio::spawn(a.run()));
    put_numbered(&kinesis, 0, 400, 40, Duration::from_millis(5)).await;
    let b = worker("b", &kinesis, &store, &log, &configure, false);
    let (b_stop, b_task) = (b.shutdown_handle(), tokio::spawn(b.run()));
    put_numbered(&kinesis, 400, 1600, 40, Duration::from_millis(5)).await;
    // Until every record was delivered and each worker owns two leases (or 60 s passed).
    let mut owners = HashMap::new();
    for _ in 0..600 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        owners.clear();
        for lease in store.list().await.unwrap() {
            if let Some(owner) = lease.actual_owner() {
                *owners.entry(owner.to_owned()).or_insert(0) += 1;
            }
        }
        let delivered: std::collections::HashSet<usize> =
            log.lock().unwrap().iter().map(|(_, _, n)| *n).collect();
        if delivered.len() == 2000 && owners.get("b") == Some(&2) {
            break;
        }
    }
    b_stop.shutdown();
    b_task.await.unwrap().unwrap();
    // A processor stuck in shutdown_requested would hold a graceful stop forever.
    if a_stuck {
        a_stop.stop_now();
    } else {
        a_stop.shutdown();
    }
    a_task.await.unwrap().unwrap();
    (log, owners)
}

/// How many deliveries repeated an earlier one.
fn duplicates(log: &Log) -> usize {
    let log = log.lock().unwrap();
    let distinct: std::collections::HashSet<usize> = log.iter().map(|(_, _, n)| *n).collect();
    assert_eq!(distinct.len(), 2000, "every record delivered");
    log.len() - distinct.len()
}

#[tokio::test(start_paused = true)]
async fn a_lease_moved_to_a_joining_worker_is_processed_once() {
    let (log, owners) = a_then_b(|c| c, false).await;
    assert_eq!(owners.get("b"), Some(&2), "b took its share: {owners:?}");
    let moved: std::collections::HashSet<String> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|(w, _, _)| w == "b")
        .map(|(_, s, _)| s.clone())
        .collect();
    assert_eq!(moved.len(), 2, "b processed the shards it took");
    assert_eq!(duplicates(&log), 0, "a planned move repeats nothing");
}

/// The control: the same move without the hand-off repeats what `a` processed since its last
/// checkpoint (here: everything, as this processor checkpoints only when asked to stop).
#[tokio::test(start_paused = true)]
async fn without_the_hand_off_the_same_move_processes_records_twice() {
    let (log, owners) = a_then_b(|c| c.graceful_lease_handoff(false), false).await;
    assert_eq!(owners.get("b"), Some(&2), "{owners:?}");
    assert!(duplicates(&log) > 0);
}

#[tokio::test(start_paused = true)]
async fn a_processor_that_never_stops_loses_its_lease_after_the_hand_off_timeout() {
    let (log, owners) = a_then_b(
        |c| c.graceful_lease_handoff_timeout(Duration::from_secs(3)),
        true,
    )
    .await;
    assert_eq!(owners.get("b"), Some(&2), "b took its share: {owners:?}");
    // Nothing is lost; what `a` processed after its last checkpoint is processed again.
    duplicates(&log);
}
