//! Multi-stream workers on the in-memory Kinesis and lease store, under tokio's paused clock:
//! two streams of different shard counts shared by two workers, one stream added while they
//! run (at its own initial position), one removed and added back, the former streams' lease
//! policy, and a deleted stream that stops only itself.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;

use async_trait::async_trait;
use bytes::Bytes;
use kcl::leases::{LeaseStore, MemoryLeaseStore};
use kcl::{
    Checkpointer, FormerStreamLeases, InitialPosition, ProcessRecordsInput, ProcessorResult,
    RecordProcessor, ShardPhase, StatusHandle, StreamSpec, Worker, WorkerConfig, WorkerError,
};
use kinesis_api::memory::MemoryKinesis;
use kinesis_api::{Kinesis, PutEntry, PutResult, StreamRef};

/// (stream, data) of every record delivered.
type Log = Arc<Mutex<Vec<(String, String)>>>;

struct Recorder(Log);

#[async_trait]
impl RecordProcessor for Recorder {
    async fn process_records(&mut self, input: ProcessRecordsInput<'_>) -> ProcessorResult {
        let stream = input.checkpointer.stream().to_owned();
        {
            let mut log = self.0.lock().unwrap();
            for r in &input.records {
                log.push((
                    stream.clone(),
                    String::from_utf8_lossy(&r.data).into_owned(),
                ));
            }
        }
        input.checkpointer.checkpoint().await?;
        Ok(())
    }

    async fn shard_ended(&mut self, checkpointer: &Checkpointer) -> ProcessorResult {
        checkpointer.checkpoint().await?;
        Ok(())
    }

    async fn shutdown_requested(&mut self, checkpointer: &Checkpointer) -> ProcessorResult {
        // Nothing delivered yet is fine: there is nothing to checkpoint.
        let _ = checkpointer.checkpoint().await;
        Ok(())
    }
}

/// Puts `{stream}-{i}` for `i` in `range` into `stream`, one call each, until stored.
async fn put(kinesis: &MemoryKinesis, stream: &str, range: std::ops::Range<usize>) {
    for i in range {
        let entry = PutEntry {
            partition_key: format!("key-{}", i % 37),
            explicit_hash_key: None,
            data: Bytes::from(format!("{stream}-{i}")),
        };
        while !matches!(
            kinesis
                .put_records(&StreamRef::new(stream), vec![entry.clone()])
                .await
                .as_deref(),
            Ok([PutResult::Stored { .. }])
        ) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// An in-memory Kinesis with `streams` (name, shards), an empty lease table and a log.
fn services(
    seed: u64,
    streams: &[(&str, u32)],
) -> (Arc<MemoryKinesis>, Arc<MemoryLeaseStore>, Log) {
    let kinesis = Arc::new(MemoryKinesis::with_seed(seed));
    for (name, shards) in streams {
        kinesis.create_stream(name, *shards);
    }
    (kinesis, Arc::new(MemoryLeaseStore::new()), Log::default())
}

fn config(id: &str) -> WorkerConfig {
    common::quick_config()
        .worker_id(id)
        // Streams without their own initial position start at the tip.
        .initial_position(InitialPosition::Latest)
        .failover_time(Duration::from_millis(1500))
        .shard_sync_interval(Duration::from_secs(1))
}

fn worker(
    kinesis: &Arc<MemoryKinesis>,
    store: &Arc<MemoryLeaseStore>,
    streams: Vec<StreamSpec>,
    config: WorkerConfig,
    log: &Log,
) -> Worker {
    let log = log.clone();
    Worker::builder()
        .kinesis(kinesis.clone())
        .lease_store(store.clone())
        .streams(streams)
        .processor_factory(move |_: &str| -> Box<dyn RecordProcessor> {
            Box::new(Recorder(log.clone()))
        })
        .config(config)
        .build()
        .unwrap()
}

/// Waits (paused clock) until `done`, or panics after a simulated minute.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..600 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not within a minute: {what}");
}

fn delivered(log: &Log, stream: &str) -> HashSet<String> {
    (log.lock().unwrap().iter())
        .filter(|(s, _)| s == stream)
        .map(|(_, d)| d.clone())
        .collect()
}

fn expected(stream: &str, range: std::ops::Range<usize>) -> HashSet<String> {
    range.map(|i| format!("{stream}-{i}")).collect()
}

/// Shards of `stream` in the Processing phase, across `workers`.
fn processing(workers: &[&StatusHandle], stream: &str) -> usize {
    let marker = format!(":{stream}:");
    workers
        .iter()
        .flat_map(|w| w.snapshot().shards)
        .filter(|s| s.shard_id.contains(&marker) && s.phase == ShardPhase::Processing)
        .count()
}

#[tokio::test(start_paused = true)]
async fn two_workers_share_two_streams_one_added_while_running_and_one_removed_and_added_back() {
    let (kinesis, store, log) = services(5, &[("a", 4), ("b", 2)]);
    // Stream a is read from its oldest record (its own initial position); b is added later
    // with the worker's (the tip).
    put(&kinesis, "a", 0..200).await;
    put(&kinesis, "b", 0..100).await;
    let a = StreamSpec::new("a").initial_position(InitialPosition::TrimHorizon);
    let workers: Vec<Worker> = ["w1", "w2"]
        .iter()
        .map(|id| worker(&kinesis, &store, vec![a.clone()], config(id), &log))
        .collect();
    let lists: Vec<_> = workers
        .iter()
        .map(|w| w.streams_handle().unwrap())
        .collect();
    let statuses: Vec<_> = workers.iter().map(Worker::status_handle).collect();
    let stops: Vec<_> = workers.iter().map(Worker::shutdown_handle).collect();
    let tasks: Vec<_> = workers.into_iter().map(|w| tokio::spawn(w.run())).collect();
    until("stream a's history", || {
        delivered(&log, "a") == expected("a", 0..200)
    })
    .await;

    for list in &lists {
        assert!(list.add("b"));
        assert!(!list.add("b"), "listed already");
    }
    let status: Vec<&StatusHandle> = statuses.iter().collect();
    until("both of b's shards processing", || {
        processing(&status, "b") == 2
    })
    .await;
    put(&kinesis, "b", 100..200).await;
    put(&kinesis, "a", 200..300).await;
    until("b's new records", || {
        delivered(&log, "b") == expected("b", 100..200)
    })
    .await;
    until("a's new records", || {
        delivered(&log, "a") == expected("a", 0..300)
    })
    .await;

    // The Java KCL's multi-stream leases, and the six shards shared three and three.
    let leases = store.list().await.unwrap();
    assert_eq!(leases.len(), 6, "{leases:?}");
    for lease in &leases {
        let identifier = lease.stream_identifier.as_deref().unwrap();
        let (account, rest) = identifier.split_once(':').unwrap();
        let (name, epoch) = rest.split_once(':').unwrap();
        assert_eq!(account, "000000000000");
        assert!(name == "a" || name == "b", "{identifier}");
        assert!(epoch.parse::<u64>().is_ok(), "{identifier}");
        assert_eq!(lease.key, format!("{identifier}:{}", lease.shard()));
        assert!(lease.shard().starts_with("shardId-"), "{}", lease.key);
    }
    until("3 leases each", || {
        statuses.iter().all(|s| s.snapshot().shards.len() == 3)
    })
    .await;

    // Removing a: its processors checkpoint and stop, its leases are released and kept.
    for list in &lists {
        assert!(list.remove("a"));
    }
    until("a's shards stopped", || processing(&status, "a") == 0).await;
    until("a's leases released", || {
        let leases = store.leases();
        leases
            .iter()
            .filter(|l| l.key.contains(":a:"))
            .all(|l| l.owner.is_none())
    })
    .await;
    let before = log.lock().unwrap().len();
    put(&kinesis, "a", 300..400).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        (log.lock().unwrap()[before..].iter()).all(|(s, _)| s != "a"),
        "a removed: none of its records is processed"
    );
    assert_eq!(
        store.leases().len(),
        6,
        "the default policy keeps the leases"
    );

    // Added back: it resumes from its checkpoints.
    for list in &lists {
        assert!(list.add("a"));
    }
    until("a's records put while it was removed", || {
        delivered(&log, "a") == expected("a", 0..400)
    })
    .await;
    for stop in &stops {
        stop.shutdown();
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    // No record twice: every move went through shutdown_requested and its checkpoint.
    let log = log.lock().unwrap();
    let mut counts: HashMap<&(String, String), usize> = HashMap::new();
    for entry in log.iter() {
        *counts.entry(entry).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "{twice:?}");
    assert!(
        delivered_from(&log, "b").iter().all(|i| *i >= 100),
        "b started at the tip: its records put before it was added are not read"
    );
}

fn delivered_from(log: &[(String, String)], stream: &str) -> Vec<usize> {
    log.iter()
        .filter(|(s, _)| s == stream)
        .map(|(_, d)| d.rsplit('-').next().unwrap().parse().unwrap())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn former_stream_leases_are_deleted_once_untouched_for_the_wait() {
    let (kinesis, store, log) = services(6, &[("a", 2), ("b", 3)]);
    let config = config("w")
        .lease_cleanup_interval(Duration::from_secs(5))
        .former_stream_leases(FormerStreamLeases::DeleteAfter(Duration::from_secs(20)));
    let w = worker(&kinesis, &store, vec!["a".into(), "b".into()], config, &log);
    let (list, stop) = (w.streams_handle().unwrap(), w.shutdown_handle());
    let task = tokio::spawn(w.run());
    until("5 leases", || store.leases().len() == 5).await;
    list.remove("b");
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(store.leases().len(), 5, "not before the wait");
    until("b's leases deleted", || store.leases().len() == 2).await;
    assert!(store.leases().iter().all(|l| l.key.contains(":a:")));
    stop.shutdown();
    task.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_deleted_stream_stops_itself_only_and_a_missing_one_is_tried_again() {
    let (kinesis, store, log) = services(7, &[("a", 2), ("b", 2)]);
    let all = |s: &str| StreamSpec::new(s).initial_position(InitialPosition::TrimHorizon);
    let w = worker(
        &kinesis,
        &store,
        vec![all("a"), all("b"), all("c")],
        config("w"),
        &log,
    );
    let (stop, status) = (w.shutdown_handle(), w.status_handle());
    let task = tokio::spawn(w.run());
    put(&kinesis, "b", 0..50).await;
    until("b's records", || {
        delivered(&log, "b") == expected("b", 0..50)
    })
    .await;
    kinesis.delete_stream("b");
    put(&kinesis, "a", 0..50).await;
    until("a's records after b was deleted", || {
        delivered(&log, "a") == expected("a", 0..50)
    })
    .await;
    until("b's shards stopped", || processing(&[&status], "b") == 0).await;
    assert!(!task.is_finished(), "the worker goes on with a");
    // c did not exist at start: it is read once it does.
    kinesis.create_stream("c", 1);
    put(&kinesis, "c", 0..20).await;
    until("c's records", || {
        delivered(&log, "c") == expected("c", 0..20)
    })
    .await;
    stop.shutdown();
    task.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_single_stream_worker_refuses_a_multi_stream_table_and_the_other_way_round() {
    let kinesis = Arc::new(MemoryKinesis::with_seed(8));
    kinesis.create_stream("a", 1);
    let log: Log = Arc::default();
    let multi_table = Arc::new(MemoryLeaseStore::new());
    let w = worker(&kinesis, &multi_table, vec!["a".into()], config("w"), &log);
    let stop = w.shutdown_handle();
    let task = tokio::spawn(w.run());
    until("a lease", || multi_table.leases().len() == 1).await;
    stop.shutdown();
    task.await.unwrap().unwrap();
    let single = |store: Arc<MemoryLeaseStore>| {
        let log = log.clone();
        Worker::with_kinesis(
            kinesis.clone(),
            store,
            "a",
            move |_: &str| -> Box<dyn RecordProcessor> { Box::new(Recorder(log.clone())) },
            config("w"),
        )
    };
    let err = single(multi_table).run().await.unwrap_err();
    assert!(
        matches!(
            err,
            WorkerError::LeaseTableOfOtherKind {
                expected: "single-stream",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains(".streams("),
        "says what to do: {err}"
    );
    let single_table = Arc::new(MemoryLeaseStore::new());
    let w = single(single_table.clone());
    let stop = w.shutdown_handle();
    let task = tokio::spawn(w.run());
    until("a lease", || single_table.leases().len() == 1).await;
    stop.shutdown();
    task.await.unwrap().unwrap();
    let err = worker(&kinesis, &single_table, vec!["a".into()], config("w"), &log)
        .run()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            WorkerError::LeaseTableOfOtherKind {
                expected: "multi-stream",
                ..
            }
        ),
        "{err}"
    );
}
