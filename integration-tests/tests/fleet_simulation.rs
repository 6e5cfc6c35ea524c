//! The fleet simulation (first cut): 2–5 workers in one process on the in-memory Kinesis and
//! lease store, under tokio's paused clock, with a producer writing uniquely numbered records and
//! a seeded schedule of events: worker crashes (no release), restarts with the same or a new id,
//! splits, merges, lease-store outages longer than the failover time, and windows of Kinesis
//! faults. After each run: no lease's checkpoint ever moved backwards (in the store's own order),
//! and the delivery checker of the chaos test: nothing lost, per-key first deliveries in stored
//! order across the lineage, strictly increasing positions per session, duplicates only from
//! sessions that never checkpointed them.
//!
//! `SIM_SEED=N` runs one seed; `SIM_SEEDS=N` runs seeds 0..N (default 200, about 20 s). A failing
//! seed is printed with its events and replays exactly: the seed fixes the fleet, the schedule,
//! the in-memory services' faults and every worker's back-off jitter (`jitter_seed`), the worker
//! starts its tasks in a fixed order and its `select!`s are biased, and the paused clock orders
//! everything else. (Checked: with the old same-id taker rule, seed 20 loses 6 records on every
//! replay; two runs of all 200 seeds print the same bytes.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use integration_tests::delivery_file::{Checkpoint, Deliveries, Delivery, Stored, verify};
use kcl::leases::{CheckpointPosition, MemoryLeaseStore};
use kcl::{
    Checkpointer, InitialPosition, ProcessRecordsInput, ProcessorResult, RecordProcessor,
    ShutdownHandle, Worker, WorkerConfig, WorkerError,
};
use kinesis_api::memory::{Faults, MemoryKinesis};
use kinesis_api::{Kinesis, PutEntry, PutResult, ShardFilter, StreamRef};
use kinesis_format::{ExtendedSequenceNumber, HashKey, SequenceNumber};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinHandle;

const KEYS: usize = 40;

/// What every processor of a run writes: one shared, totally ordered log.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Deliveries>>);

struct Recorder {
    log: Log,
    session: String,
    shard: String,
}

#[async_trait]
impl RecordProcessor for Recorder {
    async fn process_records(&mut self, input: ProcessRecordsInput<'_>) -> ProcessorResult {
        {
            let mut log = self.log.0.lock().unwrap();
            for r in &input.records {
                let n = log.deliveries.len();
                log.deliveries.push(Delivery {
                    session: self.session.clone(),
                    shard: self.shard.clone(),
                    key: r.partition_key.to_string(),
                    position: r.position(),
                    data: String::from_utf8_lossy(&r.data).into_owned(),
                    at: n as u128,
                    order: (0, n),
                });
            }
        }
        if input.checkpointer.checkpoint().await.is_ok()
            && let Some(last) = input.records.last()
        {
            self.log.0.lock().unwrap().checkpoints.push(Checkpoint {
                session: self.session.clone(),
                shard: self.shard.clone(),
                position: last.position(),
            });
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

/// A running worker: its id, its handle, its task.
type Running = (String, ShutdownHandle, JoinHandle<Result<(), WorkerError>>);

/// Where a checkpoint stands: initial positions first, then records, then SHARD_END.
fn rank(p: &CheckpointPosition) -> (u8, Option<ExtendedSequenceNumber>) {
    match p {
        CheckpointPosition::Sequence {
            sequence,
            sub_sequence,
        } => (
            1,
            Some(ExtendedSequenceNumber::new(sequence.clone(), *sub_sequence)),
        ),
        CheckpointPosition::ShardEnd => (2, None),
        _ => (0, None),
    }
}

/// Checkpoints that moved a lease backwards, in store order.
fn checkpoint_regressions(checkpoints: &[(String, CheckpointPosition)]) -> Vec<String> {
    let mut last: HashMap<&str, &CheckpointPosition> = HashMap::new();
    let mut out = Vec::new();
    for (key, p) in checkpoints {
        if let Some(prev) = last.insert(key, p)
            && rank(p) < rank(prev)
        {
            out.push(format!("{key}: {prev} then {p}"));
        }
    }
    out
}

struct Fleet {
    kinesis: Arc<MemoryKinesis>,
    store: Arc<MemoryLeaseStore>,
    log: Log,
    sessions: Arc<AtomicU64>,
    running: Vec<Option<Running>>,
    /// The run's seed and how many workers were started: each start's jitter seed.
    seed: u64,
    starts: u64,
}

impl Fleet {
    fn start(&mut self, slot: usize, id: String) {
        let (log, sessions, worker_id) = (self.log.clone(), self.sessions.clone(), id.clone());
        let factory = move |shard: &str| -> Box<dyn RecordProcessor> {
            let n = sessions.fetch_add(1, Ordering::Relaxed);
            Box::new(Recorder {
                log: log.clone(),
                session: format!("{worker_id}/{n}"),
                shard: shard.to_owned(),
            })
        };
        let config = WorkerConfig::default()
            .worker_id(&id)
            .initial_position(InitialPosition::TrimHorizon)
            .failover_time(Duration::from_secs(3))
            .take_interval(Duration::from_millis(500))
            .idle_time_between_reads(Duration::from_millis(200))
            .parent_poll_interval(Duration::from_millis(200))
            .shard_sync_interval(Duration::from_secs(1))
            .failure_backoff(Duration::from_millis(100), Duration::from_secs(2))
            .jitter_seed(self.seed.wrapping_mul(1_000_003).wrapping_add(self.starts));
        self.starts += 1;
        let worker = Worker::with_kinesis(
            self.kinesis.clone(),
            self.store.clone(),
            "s",
            factory,
            config,
        );
        let handle = worker.shutdown_handle();
        self.running[slot] = Some((id, handle, tokio::spawn(worker.run())));
    }

    /// Stops a worker dead (no release, no final calls); its id.
    async fn crash(&mut self, slot: usize) -> Option<String> {
        let (id, handle, task) = self.running[slot].take()?;
        handle.stop_now();
        task.await.expect("worker task").expect("worker");
        Some(id)
    }
}

async fn put(kinesis: &MemoryKinesis, i: usize) -> Stored {
    let entry = PutEntry {
        partition_key: format!("key-{}", i % KEYS),
        explicit_hash_key: None,
        data: Bytes::from(i.to_string()),
    };
    loop {
        if let Ok(results) = kinesis
            .put_records(&StreamRef::new("s"), vec![entry.clone()])
            .await
            && let [
                PutResult::Stored {
                    shard_id,
                    sequence_number,
                },
            ] = results.as_slice()
        {
            return Stored {
                key: entry.partition_key.clone(),
                data: i.to_string(),
                shard: shard_id.clone(),
                position: ExtendedSequenceNumber::new(
                    SequenceNumber::parse(sequence_number).expect("sequence"),
                    0,
                ),
            };
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One seeded run; `Err` says what broke.
async fn run(seed: u64) -> Result<String, String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let workers = rng.random_range(2..=5);
    let shards = rng.random_range(4..=16);
    let records = 1_500;
    let kinesis = Arc::new(MemoryKinesis::with_seed(seed));
    kinesis.create_stream("s", shards);
    let store = Arc::new(MemoryLeaseStore::new());
    store.set_failures(0.02, seed);
    let mut fleet = Fleet {
        kinesis: kinesis.clone(),
        store: store.clone(),
        log: Log::default(),
        sessions: Arc::default(),
        running: (0..workers).map(|_| None).collect(),
        seed,
        starts: 0,
    };
    for w in 0..workers {
        fleet.start(w, format!("w{w}"));
    }
    let mut stored = Vec::with_capacity(records);
    let mut events = Vec::new();
    let mut restarts = 0;
    for i in 0..records {
        stored.push(put(&kinesis, i).await);
        tokio::time::sleep(Duration::from_millis(10)).await;
        if i % 100 != 99 {
            continue;
        }
        match rng.random_range(0..6) {
            0 | 1 => {
                let slot = rng.random_range(0..workers);
                if let Some(old) = fleet.crash(slot).await {
                    tokio::time::sleep(Duration::from_millis(rng.random_range(0..2_000))).await;
                    let id = if rng.random_bool(0.5) {
                        old
                    } else {
                        restarts += 1;
                        format!("w{slot}-{restarts}")
                    };
                    events.push(format!("crash {slot}, restart as {id}"));
                    fleet.start(slot, id);
                }
            }
            2 => {
                let open = kinesis
                    .list_shards(&StreamRef::new("s"), ShardFilter::Open)
                    .await;
                if let Ok(open) = open {
                    let s = &open[rng.random_range(0..open.len())];
                    let at = HashKey(s.range.start.0 + (s.range.end.0 - s.range.start.0) / 2);
                    if kinesis.split_shard("s", &s.id, at).is_ok() {
                        events.push(format!("split {}", s.id));
                    }
                }
            }
            3 => {
                let open = kinesis
                    .list_shards(&StreamRef::new("s"), ShardFilter::Open)
                    .await;
                if let Ok(mut open) = open
                    && open.len() > 1
                {
                    open.sort_by_key(|s| s.range.start);
                    let k = rng.random_range(0..open.len() - 1);
                    if kinesis
                        .merge_shards("s", &open[k].id, &open[k + 1].id)
                        .is_ok()
                    {
                        events.push(format!("merge {} {}", open[k].id, open[k + 1].id));
                    }
                }
            }
            4 => {
                let outage = Duration::from_millis(rng.random_range(500..5_000));
                events.push(format!("lease store outage {outage:?}"));
                store.set_outage(true);
                tokio::time::sleep(outage).await;
                store.set_outage(false);
            }
            _ => {
                events.push("Kinesis faults for 2 s".into());
                kinesis.set_faults(Faults {
                    internal_error: 0.1,
                    throttle: 0.1,
                    timeout: 0.02,
                    timeout_after: Duration::from_secs(2),
                });
                tokio::time::sleep(Duration::from_secs(2)).await;
                kinesis.set_faults(Faults::default());
            }
        }
    }
    // Quiet from here: every record must arrive.
    let parents: HashMap<String, Vec<String>> = kinesis
        .list_shards(&StreamRef::new("s"), ShardFilter::All)
        .await
        .expect("shards")
        .into_iter()
        .map(|s| (s.id.clone(), s.parents.clone()))
        .collect();
    let mut verdict = None;
    for _ in 0..1_200 {
        let got = fleet.log.0.lock().unwrap().clone();
        let v = verify(&stored, &got, &parents);
        if v.never_delivered.is_empty() {
            verdict = Some(v);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let verdict =
        verdict.unwrap_or_else(|| verify(&stored, &fleet.log.0.lock().unwrap().clone(), &parents));
    for slot in 0..workers {
        if let Some((_, handle, task)) = fleet.running[slot].take() {
            handle.shutdown();
            task.await
                .expect("worker task")
                .map_err(|e| format!("worker: {e}"))?;
        }
    }
    let backwards = checkpoint_regressions(&store.checkpoint_history());
    let summary = format!(
        "seed {seed}: {workers} workers, {shards} shards, {records} records, events {events:?}; checkpoints backwards {}, never delivered {}, out of order {}, session regressions {}, unexplained duplicates {}, duplicates {}",
        backwards.len(),
        verdict.never_delivered.len(),
        verdict.out_of_order.len(),
        verdict.session_regressions.len(),
        verdict.unexplained_duplicates.len(),
        verdict.duplicates
    );
    if verdict.ok() && backwards.is_empty() {
        Ok(summary)
    } else {
        Err(format!(
            "{summary}\ncheckpoints backwards {:?}\nnever delivered {:?}\nout of order {:?}\nsession regressions {:?}\nunexplained duplicates {:?}",
            &backwards[..backwards.len().min(10)],
            &verdict.never_delivered[..verdict.never_delivered.len().min(10)],
            &verdict.out_of_order[..verdict.out_of_order.len().min(10)],
            &verdict.session_regressions[..verdict.session_regressions.len().min(10)],
            &verdict.unexplained_duplicates[..verdict.unexplained_duplicates.len().min(10)],
        ))
    }
}

#[tokio::test(start_paused = true)]
async fn seeded_fleets_keep_the_consumers_promise() {
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let seeds: Vec<u64> = match (env("SIM_SEED"), env("SIM_SEEDS")) {
        (Some(seed), _) => vec![seed],
        (None, n) => (0..n.unwrap_or(200)).collect(),
    };
    let mut failures = Vec::new();
    for seed in seeds {
        match run(seed).await {
            Ok(summary) => eprintln!("{summary}"),
            Err(failure) => {
                eprintln!("FAILED {failure}\nreplay: SIM_SEED={seed}");
                failures.push(seed);
            }
        }
    }
    assert!(failures.is_empty(), "failing seeds: {failures:?}");
}

#[test]
fn a_checkpoint_moving_backwards_is_caught() {
    let at = |s: &str| CheckpointPosition::Sequence {
        sequence: SequenceNumber::parse(s).unwrap(),
        sub_sequence: 0,
    };
    let forward = [
        ("a".to_owned(), at("5")),
        ("b".to_owned(), at("1")),
        ("a".to_owned(), at("7")),
        ("a".to_owned(), CheckpointPosition::ShardEnd),
    ];
    assert!(checkpoint_regressions(&forward).is_empty());
    let back = [("a".to_owned(), at("7")), ("a".to_owned(), at("5"))];
    assert_eq!(checkpoint_regressions(&back).len(), 1);
    let after_end = [
        ("a".to_owned(), CheckpointPosition::ShardEnd),
        ("a".to_owned(), at("9")),
    ];
    assert_eq!(checkpoint_regressions(&after_end).len(), 1);
}
