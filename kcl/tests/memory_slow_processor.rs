//! A processor call that does not return: the worker names it in a warning (counted in
//! `ProcessorCall.Slow`) after `slow_processor_call_warning` and at each doubling, never cancels
//! it, and keeps the lease meanwhile. In-memory Kinesis and lease store, paused clock. (A metrics
//! recorder is global to the process, so this test has its own test binary.)

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

mod common;

use async_trait::async_trait;
use kcl::leases::{LeaseStore, MemoryLeaseStore};
use kcl::{Checkpointer, ProcessRecordsInput, ProcessorResult, RecordProcessor, Worker};
use kinesis_api::memory::MemoryKinesis;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

/// Takes `hang` over its first batch; counts the records it has finished with.
struct Hanging {
    hang: Duration,
    done: Arc<AtomicUsize>,
}

#[async_trait]
impl RecordProcessor for Hanging {
    async fn process_records(&mut self, input: ProcessRecordsInput<'_>) -> ProcessorResult {
        if self.done.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(self.hang).await;
        }
        self.done.fetch_add(input.records.len(), Ordering::SeqCst);
        input.checkpointer.checkpoint().await?;
        Ok(())
    }

    async fn shard_ended(&mut self, checkpointer: &Checkpointer) -> ProcessorResult {
        checkpointer.checkpoint().await?;
        Ok(())
    }
}

/// The `ProcessorCall.Slow` counts by (call, shard) since the last snapshot (which resets them
/// to zero: those are left out).
fn slow_calls(snapshotter: &Snapshotter) -> BTreeMap<(String, String), u64> {
    let mut counts = BTreeMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        if key.key().name() != "ProcessorCall.Slow" {
            continue;
        }
        let label = |name: &str| {
            (key.key().labels())
                .find(|l| l.key() == name)
                .map(|l| l.value().to_owned())
                .unwrap_or_default()
        };
        if let DebugValue::Counter(n @ 1..) = value {
            *counts.entry((label("call"), label("shard"))).or_default() += n;
        }
    }
    counts
}

/// Runs a worker over one shard holding 10 records whose processor hangs 150 s over its first
/// batch, warning after `warn_after`; returns once every record is processed.
async fn hang_for_150_s(warn_after: Option<Duration>) {
    let kinesis = Arc::new(MemoryKinesis::with_seed(3));
    kinesis.create_stream("s", 1);
    common::put_numbered(&kinesis, 0, 10, 3, Duration::ZERO).await;
    let store = Arc::new(MemoryLeaseStore::new());
    let done = Arc::new(AtomicUsize::new(0));
    let factory = {
        let done = done.clone();
        move |_: &str| -> Box<dyn RecordProcessor> {
            Box::new(Hanging {
                hang: Duration::from_secs(150),
                done: done.clone(),
            })
        }
    };
    let worker = Worker::builder()
        .kinesis(kinesis)
        .lease_store(store.clone())
        .stream("s")
        .processor_factory(factory)
        .config(common::quick_config().slow_processor_call_warning(warn_after))
        .build()
        .unwrap();
    let stop = worker.shutdown_handle();
    let task = tokio::spawn(worker.run());
    for _ in 0..2000 {
        if done.load(Ordering::SeqCst) == 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(done.load(Ordering::SeqCst), 10, "every record processed");
    // The lease stayed with the worker while its processor hung (renewals go on).
    let lease = store.get("shardId-000000000000").await.unwrap().unwrap();
    assert_eq!(lease.owner.as_deref(), Some("w"));
    // Renewed every 3.3 s through the 150 s (45 renewals).
    assert!(
        lease.counter >= 40,
        "renewed while the processor hung: {lease:?}"
    );
    stop.shutdown();
    task.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_hanging_process_records_is_named_after_60_s_and_again_at_120_s_and_not_cancelled() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder in this binary");

    hang_for_150_s(Some(Duration::from_secs(60))).await;
    let expected = BTreeMap::from([(
        (
            "process_records".to_owned(),
            "shardId-000000000000".to_owned(),
        ),
        2,
    )]);
    assert_eq!(
        slow_calls(&snapshotter),
        expected,
        "warnings at 60 s and 120 s"
    );

    hang_for_150_s(None).await;
    assert_eq!(slow_calls(&snapshotter), BTreeMap::new(), "warnings off");
}
