//! Throughput-aware balancing on the in-memory Kinesis and lease store, under the paused clock:
//! one hot shard and eleven cold ones on three workers settle with the hot shard's worker holding
//! the fewest leases, then no lease moves for 20 take intervals; a fourth worker joining takes its
//! share of the load within a few take intervals.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

mod common;

use common::Checkpointing;

use bytes::Bytes;
use kcl::leases::{LeaseStore, MemoryLeaseStore};
use kcl::{InitialPosition, RecordProcessor, Worker, WorkerConfig};
use kinesis_api::memory::MemoryKinesis;
use kinesis_api::{Kinesis, PutEntry, ShardFilter, StreamRef};
use tokio::time::Instant;

const TAKE_INTERVAL: Duration = Duration::from_millis(500);
const SHARDS: u32 = 12;

fn worker(id: &str, kinesis: &Arc<MemoryKinesis>, store: &Arc<MemoryLeaseStore>) -> Worker {
    let config = WorkerConfig::default()
        .worker_id(id)
        .jitter_seed(id.len() as u64)
        .initial_position(InitialPosition::TrimHorizon)
        .failover_time(Duration::from_millis(1500))
        .take_interval(TAKE_INTERVAL)
        .idle_time_between_reads(Duration::from_millis(100))
        .balance_by_throughput(50.0);
    Worker::with_kinesis(
        kinesis.clone(),
        store.clone(),
        "s",
        |_: &str| -> Box<dyn RecordProcessor> { Box::new(Checkpointing) },
        config,
    )
}

/// Writes ~400 KiB/s into the first shard and ~1 KiB/s into each other, until aborted.
async fn traffic(kinesis: Arc<MemoryKinesis>) {
    let shards = kinesis
        .list_shards(&StreamRef::new("s"), ShardFilter::Open)
        .await
        .unwrap();
    let hot = shards[0].range.start.0.to_string();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        let mut entries: Vec<PutEntry> = (0..40)
            .map(|i| PutEntry {
                partition_key: format!("hot-{i}"),
                explicit_hash_key: Some(hot.clone()),
                data: Bytes::from(vec![b'h'; 1024]),
            })
            .collect();
        entries.extend(shards[1..].iter().map(|s| PutEntry {
            partition_key: "cold".into(),
            explicit_hash_key: Some(s.range.start.0.to_string()),
            data: Bytes::from(vec![b'c'; 100]),
        }));
        let _ = kinesis.put_records(&StreamRef::new("s"), entries).await;
    }
}

/// Lease key → actual owner.
async fn owners(store: &MemoryLeaseStore) -> BTreeMap<String, String> {
    store
        .list()
        .await
        .unwrap()
        .into_iter()
        .filter_map(|l| Some((l.key.clone(), l.actual_owner()?.to_owned())))
        .collect()
}

fn counts(owners: &BTreeMap<String, String>) -> BTreeMap<String, usize> {
    let mut c = BTreeMap::new();
    for o in owners.values() {
        *c.entry(o.clone()).or_insert(0) += 1;
    }
    c
}

/// Polls every 100 ms until `done` holds for the owners, or `limit` passes; returns how long.
async fn until(
    store: &MemoryLeaseStore,
    limit: Duration,
    done: impl Fn(&BTreeMap<String, String>) -> bool,
) -> Duration {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done(&owners(store).await) {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not within {limit:?}: {:?}", counts(&owners(store).await));
}

#[tokio::test(start_paused = true)]
async fn a_hot_shard_settles_without_churn_and_a_joining_worker_takes_its_share() {
    let kinesis = Arc::new(MemoryKinesis::default());
    kinesis.create_stream("s", SHARDS);
    let store = Arc::new(MemoryLeaseStore::new());
    let hot_key = kinesis
        .list_shards(&StreamRef::new("s"), ShardFilter::Open)
        .await
        .unwrap()[0]
        .id
        .clone();
    let load = tokio::spawn(traffic(kinesis.clone()));
    let mut running = Vec::new();
    for id in ["a", "b", "c"] {
        let w = worker(id, &kinesis, &store);
        running.push((w.shutdown_handle(), tokio::spawn(w.run())));
    }
    // Settled: the hot shard's worker holds fewer leases than each other worker.
    let hot_fewest = |o: &BTreeMap<String, String>| {
        let c = counts(o);
        o.len() == SHARDS as usize
            && c.len() == 3
            && o.get(&hot_key).is_some_and(|hot_owner| {
                c.iter()
                    .filter(|(w, _)| *w != hot_owner)
                    .all(|(_, n)| *n > c[hot_owner])
            })
    };
    until(&store, Duration::from_secs(60), hot_fewest).await;
    // Settled: the same owners for 25 take intervals (hand-offs under way have landed, and
    // the throughputs have had a few smoothing time constants).
    let mut settled = owners(&store).await;
    let mut still = 0;
    while still < 25 {
        tokio::time::sleep(TAKE_INTERVAL).await;
        let now = owners(&store).await;
        still = if now == settled { still + 1 } else { 0 };
        settled = now;
    }
    let mut moves = 0;
    let mut last = settled.clone();
    for _ in 0..20 {
        tokio::time::sleep(TAKE_INTERVAL).await;
        let now = owners(&store).await;
        moves += now.iter().filter(|(k, o)| last.get(*k) != Some(*o)).count();
        last = now;
    }
    assert_eq!(moves, 0, "no lease moves once settled: {:?}", counts(&last));
    assert!(hot_fewest(&last), "{:?}", counts(&last));

    // A fourth worker joins: it takes cold leases until the load is even (a third of the
    // others' cold leases here), one hand-off per take interval.
    let d = worker("d", &kinesis, &store);
    running.push((d.shutdown_handle(), tokio::spawn(d.run())));
    let joined = until(&store, Duration::from_secs(30), |o| {
        counts(o).get("d").copied().unwrap_or(0) >= 3
    })
    .await;
    assert!(
        joined <= TAKE_INTERVAL * 3 + Duration::from_millis(1500),
        "3 leases after {joined:?}: 3 take intervals, plus the hand-off of the last (its owner's \
         next renewal, a third of the failover time, and the new owner's poll)"
    );
    eprintln!(
        "settled: {:?}; the joining worker held 3 leases after {joined:?}",
        counts(&settled)
    );

    load.abort();
    for (handle, task) in running {
        handle.shutdown();
        task.await.unwrap().unwrap();
    }
}
