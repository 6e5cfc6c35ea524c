//! The worker's metrics, read through a recorder while a worker reads a throttled in-memory
//! stream: per-shard records, bytes, lag and latencies, and the lease counts. (A recorder is
//! global to the process, so this test has its own test binary.)

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use kcl::leases::{LeaseStore, MemoryLeaseStore};
use kcl::{
    Checkpointer, InitialPosition, ProcessRecordsInput, ProcessorResult, RecordProcessor, Worker,
    WorkerConfig,
};
use kinesis_api::memory::{Faults, MemoryKinesis};
use kinesis_api::{Kinesis, PutEntry, PutResult, StreamRef};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

struct Counting(Arc<AtomicUsize>);

#[async_trait]
impl RecordProcessor for Counting {
    async fn process_records(&mut self, input: ProcessRecordsInput<'_>) -> ProcessorResult {
        self.0.fetch_add(input.records.len(), Ordering::SeqCst);
        input.checkpointer.checkpoint().await?;
        Ok(())
    }

    async fn shard_ended(&mut self, checkpointer: &Checkpointer) -> ProcessorResult {
        checkpointer.checkpoint().await?;
        Ok(())
    }
}

type Series = Vec<(BTreeMap<String, String>, DebugValue)>;

/// Every series by name, with its labels and value. (Taking a snapshot resets the recorder's
/// values.)
fn snapshot(snapshotter: &Snapshotter) -> BTreeMap<String, Series> {
    let mut all: BTreeMap<String, Series> = BTreeMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let labels = key
            .key()
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        all.entry(key.key().name().to_owned())
            .or_default()
            .push((labels, value));
    }
    all
}

fn counter_sum(s: &[(BTreeMap<String, String>, DebugValue)]) -> u64 {
    s.iter()
        .map(|(_, v)| match v {
            DebugValue::Counter(c) => *c,
            other => panic!("not a counter: {other:?}"),
        })
        .sum()
}

fn shards(s: &[(BTreeMap<String, String>, DebugValue)]) -> Vec<String> {
    let mut shards: Vec<String> = s
        .iter()
        .filter_map(|(labels, _)| labels.get("shard").cloned())
        .collect();
    shards.sort();
    shards.dedup();
    shards
}

#[tokio::test(start_paused = true)]
async fn a_worker_reports_records_lag_latencies_and_leases() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder in this binary");

    let kinesis = Arc::new(MemoryKinesis::with_seed(11));
    kinesis.create_stream("s", 2);
    let (mut records, mut bytes) = (0usize, 0usize);
    for i in 0..400 {
        let data = format!("record-{i}");
        let entry = PutEntry {
            partition_key: format!("k{i}"),
            explicit_hash_key: None,
            data: Bytes::from(data.clone()),
        };
        let put = kinesis
            .put_records(&StreamRef::new("s"), vec![entry])
            .await
            .unwrap();
        if matches!(put[0], PutResult::Stored { .. }) {
            records += 1;
            bytes += data.len();
        }
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    assert_eq!(records, 400);
    // A fifth of the calls throttled from here on.
    kinesis.set_faults(Faults {
        throttle: 0.2,
        ..Faults::default()
    });

    let store = Arc::new(MemoryLeaseStore::new());
    let seen = Arc::new(AtomicUsize::new(0));
    let factory = {
        let seen = seen.clone();
        move |_: &str| -> Box<dyn RecordProcessor> { Box::new(Counting(seen.clone())) }
    };
    let worker = Worker::builder()
        .kinesis(kinesis.clone())
        .lease_store(store.clone())
        .stream("s")
        .processor_factory(factory)
        .config(
            WorkerConfig::default()
                .worker_id("w")
                .jitter_seed(5)
                .initial_position(InitialPosition::TrimHorizon)
                .failover_time(Duration::from_secs(3))
                .take_interval(Duration::from_millis(200))
                .idle_time_between_reads(Duration::from_millis(200)),
        )
        .build()
        .unwrap();
    let handle = worker.shutdown_handle();
    let running = tokio::spawn(worker.run());
    while seen.load(Ordering::SeqCst) < records {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let snap = snapshot(&snapshotter);
    let series = |name: &str| snap.get(name).map_or(&[][..], Vec::as_slice);
    let processed = series("RecordsProcessed");
    assert_eq!(counter_sum(processed), records as u64);
    assert_eq!(
        shards(processed),
        ["shardId-000000000000", "shardId-000000000001"],
        "one series per shard"
    );
    assert!(
        processed
            .iter()
            .all(|(l, _)| l.get("stream").map(String::as_str) == Some("s"))
    );
    assert_eq!(counter_sum(series("DataBytesProcessed")), bytes as u64);
    assert_eq!(shards(series("MillisBehindLatest")).len(), 2);
    assert!(
        counter_sum(series("GetRecords.Throttled")) > 0,
        "throttled reads are counted"
    );
    for name in ["GetRecords.Time", "ProcessTask.Time", "Checkpoint.Time"] {
        let s = series(name);
        assert!(
            s.iter()
                .any(|(_, v)| matches!(v, DebugValue::Histogram(h) if !h.is_empty())),
            "{name}: {s:?}"
        );
    }
    assert_eq!(counter_sum(series("TakenLeases")), 2);
    assert_eq!(
        series("CurrentLeases"),
        [(BTreeMap::new(), DebugValue::Gauge(2.0.into()))]
    );

    // Another worker takes one lease: the next renewal (a third of the failover time) finds it
    // taken.
    let lease = store.get("shardId-000000000000").await.unwrap().unwrap();
    store.take(&lease, "thief").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let snap = snapshot(&snapshotter);
    let series = |name: &str| snap.get(name).map_or(&[][..], Vec::as_slice);
    assert_eq!(counter_sum(series("LostLeases")), 1);
    assert_eq!(
        series("CurrentLeases"),
        [(BTreeMap::new(), DebugValue::Gauge(1.0.into()))]
    );

    // Another worker asks for the other lease: the next renewal learns of it, the processor
    // stops and the lease is handed over.
    let lease = store.get("shardId-000000000001").await.unwrap().unwrap();
    store.hand_off(&lease, "asker").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let snap = snapshot(&snapshotter);
    let series = |name: &str| snap.get(name).map_or(&[][..], Vec::as_slice);
    assert_eq!(counter_sum(series("HandedOffLeases")), 1);
    assert_eq!(
        series("CurrentLeases"),
        [(BTreeMap::new(), DebugValue::Gauge(0.0.into()))]
    );
    let now = store.get("shardId-000000000001").await.unwrap().unwrap();
    assert_eq!(
        (now.owner.as_deref(), now.checkpoint_owner.as_deref()),
        (Some("asker"), None)
    );

    handle.shutdown();
    running.await.unwrap().unwrap();
}
