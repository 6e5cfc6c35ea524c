//! What a running worker asks of its lease table, counted on the in-memory store under tokio's
//! paused clock: the steady-state calls per minute with the default intervals (the budget the
//! kcl README states), and a multi-stream worker's shard sync, which lists the table once a round
//! for all its streams, so it Scans no more than a single-stream worker does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

mod common;

use kcl::leases::MemoryLeaseStore;
use kcl::{InitialPosition, RecordProcessor, StreamSpec, Worker, WorkerConfig};
use kinesis_api::memory::MemoryKinesis;

const SYNC_INTERVAL: Duration = Duration::from_secs(5);
const RUN_FOR: Duration = Duration::from_secs(120);

/// The lease-store operations counted, by the names the in-memory store gives them.
const OPERATIONS: [&str; 7] = [
    "memory Scan",
    "memory Query",
    "memory GetItem",
    "memory PutItem",
    "memory UpdateItem",
    "memory DeleteItem",
    "memory DescribeTable",
];

/// The calls by operation a worker with `config` reading `streams` (each of `shards` idle
/// shards) makes in `run_for` of simulated time once it holds every lease.
async fn calls_while_running(
    streams: usize,
    shards: u32,
    config: WorkerConfig,
    run_for: Duration,
) -> BTreeMap<&'static str, u64> {
    let kinesis = Arc::new(MemoryKinesis::with_seed(1));
    let names: Vec<String> = (0..streams).map(|i| format!("s{i}")).collect();
    for name in &names {
        kinesis.create_stream(name, shards);
    }
    let store = Arc::new(MemoryLeaseStore::new());
    let builder = Worker::builder()
        .kinesis(kinesis.clone())
        .lease_store(store.clone())
        .processor_factory(|_: &str| -> Box<dyn RecordProcessor> {
            Box::new(common::Checkpointing)
        })
        .config(config);
    let worker = if streams == 1 {
        builder.stream("s0")
    } else {
        builder.streams(names.iter().map(StreamSpec::new).collect::<Vec<_>>())
    }
    .build()
    .unwrap();
    let leases = streams * shards as usize;
    let status = worker.status_handle();
    let stop = worker.shutdown_handle();
    let task = tokio::spawn(worker.run());
    for _ in 0..600 {
        if status.snapshot().shards.len() == leases {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status.snapshot().shards.len(), leases, "leases taken");
    let before: Vec<u64> = OPERATIONS.iter().map(|op| store.calls(op)).collect();
    tokio::time::sleep(run_for).await;
    let calls = OPERATIONS
        .iter()
        .zip(before)
        .map(|(op, before)| (*op, store.calls(op) - before))
        .collect();
    stop.shutdown();
    task.await.unwrap().unwrap();
    calls
}

/// The Scans a worker reading `streams` streams of 2 shards makes in `RUN_FOR`.
async fn scans_while_running(streams: usize) -> u64 {
    let config = common::quick_config()
        .take_interval(Duration::from_secs(2))
        .shard_sync_interval(SYNC_INTERVAL);
    calls_while_running(streams, 2, config, RUN_FOR).await["memory Scan"]
}

#[tokio::test(start_paused = true)]
async fn a_multi_stream_worker_scans_the_table_once_per_shard_sync_round_not_once_per_stream() {
    let one = scans_while_running(1).await;
    let four = scans_while_running(4).await;
    let rounds = (RUN_FOR.as_secs() / SYNC_INTERVAL.as_secs()) as i64;
    // One Scan per take round (every 2 s) plus one per shard sync round, whatever the number
    // of streams; one per stream and round would add 3 × 24 = 72.
    assert!(
        (four as i64 - one as i64).abs() <= 2,
        "4 streams: {four} Scans in {RUN_FOR:?}; 1 stream: {one} (shard sync rounds: {rounds})"
    );
    assert!(
        one <= (RUN_FOR.as_secs() / 2) + rounds as u64 + 2,
        "1 stream: {one} Scans in {RUN_FOR:?}"
    );
}

/// Every operation's calls per minute over `minutes` of a worker that holds the leases of one
/// idle stream of `shards` shards, with the default intervals.
async fn calls_per_minute(shards: u32, minutes: u64) -> BTreeMap<&'static str, f64> {
    let config = WorkerConfig::default()
        .worker_id("w")
        .jitter_seed(5)
        .initial_position(InitialPosition::TrimHorizon);
    let run_for = Duration::from_secs(60 * minutes);
    let calls = calls_while_running(1, shards, config, run_for).await;
    calls
        .into_iter()
        .map(|(op, n)| (op, n as f64 / minutes as f64))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn at_steady_state_a_worker_renews_each_lease_18_times_a_minute_and_scans_about_4_times() {
    let rates = calls_per_minute(10, 30).await;
    let rate = |op: &str| rates[op];
    // Renewals: every failover / 3 = 3.3 s, per lease (each one conditional UpdateItem).
    assert!(
        (179.0..=181.0).contains(&rate("memory UpdateItem")),
        "{rates:?}"
    );
    // Take rounds every 20 s (3), shard sync every minute (1), cleanup every 5 minutes (0.2).
    assert!((4.0..=4.4).contains(&rate("memory Scan")), "{rates:?}");
    for op in [
        "memory Query",
        "memory GetItem",
        "memory PutItem",
        "memory DeleteItem",
    ] {
        assert_eq!(rate(op), 0.0, "{op}: {rates:?}");
    }
}
