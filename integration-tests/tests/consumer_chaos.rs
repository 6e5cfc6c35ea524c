//! Chaos, as operators meet it: three worker processes on an 8-shard stream while a producer
//! writes uniquely numbered records; every few seconds one worker is killed with SIGKILL and
//! restarted, half of the time with the same worker id; one split and one merge while it runs.
//! Then: no record is never delivered; for every partition key, first deliveries follow the
//! stored order across the shard lineage (parent before child); each session delivers in strictly
//! increasing order; and every duplicate comes from a session that delivered the record and was
//! killed (or lost the lease) before checkpointing it. The counts are printed.
//!
//! `CHAOS_SEED=N` replays a schedule of kills and restarts (the emulators' timing still varies).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use bytes::Bytes;
use integration_tests::delivery_file::{Deliveries, Stored, verify};
use integration_tests::read::shard_range;
use integration_tests::{TestEnv, TestTable, random_name};
use kinesis_format::{ExtendedSequenceNumber, HashKey, SequenceNumber};
use kpl::{Producer, ProducerConfig, UserRecord};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const WORKERS: usize = 3;
const KEYS: usize = 200;
/// Records put per tick, and ticks (one every 250 ms): 16,000 records over ~40 s.
const PER_TICK: usize = 100;
const TICKS: usize = 160;

struct Fleet {
    dir: PathBuf,
    table: String,
    stream: String,
    running: Vec<(String, Child)>,
    files: Vec<PathBuf>,
    restarts: usize,
}

impl Fleet {
    fn spawn(&mut self, slot: usize, id: String) {
        let file = self.dir.join(format!("{id}-{}.log", self.files.len()));
        let child = Command::new(env!("CARGO_BIN_EXE_kcl_worker"))
            .args([&self.table, &self.stream, &id, "1500"])
            .arg(&file)
            .spawn()
            .expect("start kcl_worker");
        self.files.push(file);
        if slot < self.running.len() {
            self.running[slot] = (id, child);
        } else {
            self.running.push((id, child));
        }
    }

    fn kill(&mut self, slot: usize) -> String {
        let (id, child) = &mut self.running[slot];
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        id.clone()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for (_, child) in &mut self.running {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_restarted_workers_lose_nothing_across_a_split_and_a_merge() {
    integration_tests::log_capture::warnings_to_test_output();
    let seed: u64 = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("chaos seed {seed} (replay: CHAOS_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let env = TestEnv::new().await;
    let stream = env.create_stream(8).await;
    let table = TestTable::adopt(&env, random_name("app"));
    let dir = std::env::temp_dir().join(random_name("chaos"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut fleet = Fleet {
        dir: dir.clone(),
        table: table.name.clone(),
        stream: stream.name.clone(),
        running: Vec::new(),
        files: Vec::new(),
        restarts: 0,
    };
    for w in 0..WORKERS {
        fleet.spawn(w, format!("w{w}"));
    }

    let producer = Producer::new(&env.sdk_config, ProducerConfig::default()).expect("producer");
    let mut futures = Vec::new();
    let started = Instant::now();
    let mut next_kill = Duration::from_secs(rng.random_range(2..5));
    let (mut split, mut merged) = (false, false);
    let mut ids_reused = 0;
    for tick in 0..TICKS {
        for j in 0..PER_TICK {
            let i = tick * PER_TICK + j;
            let record = UserRecord::new(
                stream.name.as_str(),
                format!("key-{}", i % KEYS),
                Bytes::from(i.to_string()),
            );
            futures.push((i, producer.put(record).await.expect("accepted")));
        }
        if started.elapsed() >= next_kill {
            let slot = rng.random_range(0..WORKERS);
            let old = fleet.kill(slot);
            tokio::time::sleep(Duration::from_millis(rng.random_range(100..1_000))).await;
            let id = if rng.random_bool(0.5) {
                ids_reused += 1;
                old
            } else {
                fleet.restarts += 1;
                format!("w{slot}-{}", fleet.restarts)
            };
            fleet.spawn(slot, id);
            next_kill = started.elapsed() + Duration::from_secs(rng.random_range(2..5));
        }
        if !split && tick == TICKS / 3 {
            split = true;
            let shard = stream.open_shards().await.remove(0);
            let r = shard_range(&shard);
            env.kinesis
                .split_shard()
                .stream_name(&stream.name)
                .shard_to_split(shard.shard_id())
                .new_starting_hash_key(HashKey(r.start.0 + (r.end.0 - r.start.0) / 2).to_string())
                .send()
                .await
                .expect("SplitShard");
        }
        if !merged && tick == 2 * TICKS / 3 {
            merged = true;
            let mut open = stream.open_shards().await;
            open.sort_by_key(|s| shard_range(s).start);
            let (a, b) = (open[open.len() - 2].clone(), open[open.len() - 1].clone());
            env.kinesis
                .merge_shards()
                .stream_name(&stream.name)
                .shard_to_merge(a.shard_id())
                .adjacent_shard_to_merge(b.shard_id())
                .send()
                .await
                .expect("MergeShards");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut stored = Vec::new();
    for (i, f) in futures {
        let outcome = f.await.expect("stored");
        stored.push(Stored {
            key: format!("key-{}", i % KEYS),
            data: i.to_string(),
            shard: outcome.shard_id().to_owned(),
            position: ExtendedSequenceNumber::new(
                SequenceNumber::parse(outcome.sequence_number()).expect("sequence"),
                outcome.sub_sequence_number(),
            ),
        });
    }
    let resent = producer.stats().wrong_shard_resent;
    producer.shutdown().await;
    let produced_in = started.elapsed();

    // No more kills: wait until every record was delivered (or give up and report).
    let deadline = Instant::now() + Duration::from_secs(60);
    let parents: HashMap<String, Vec<String>> = stream
        .shards()
        .await
        .iter()
        .map(|s| {
            let p = s
                .parent_shard_id()
                .into_iter()
                .chain(s.adjacent_parent_shard_id())
                .map(str::to_owned)
                .collect();
            (s.shard_id().to_owned(), p)
        })
        .collect();
    let verdict = loop {
        let verdict = verify(&stored, &Deliveries::read(&fleet.files), &parents);
        if verdict.never_delivered.is_empty() || Instant::now() > deadline {
            break verdict;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let drained_in = started.elapsed() - produced_in;
    let processes = fleet.files.len();
    drop(fleet);
    eprintln!(
        "chaos seed {seed}: {} records, {} processes ({} restarts with the same id), never delivered {}, duplicates {}, stored twice {} (re-sent after the reshard {resent}), out of order {}, session regressions {}, unexplained duplicates {}, key pairs checked {}; produced in {produced_in:?}, drained {drained_in:?} later",
        stored.len(),
        processes,
        ids_reused,
        verdict.never_delivered.len(),
        verdict.duplicates,
        verdict.second_copies,
        verdict.out_of_order.len(),
        verdict.session_regressions.len(),
        verdict.unexplained_duplicates.len(),
        verdict.ordered_pairs,
    );
    assert!(split && merged);
    assert!(
        verdict.ok(),
        "seed {seed}: never delivered {:?}\nout of order {:?}\nsession regressions {:?}\nunexplained duplicates {:?}",
        &verdict.never_delivered[..verdict.never_delivered.len().min(20)],
        &verdict.out_of_order[..verdict.out_of_order.len().min(20)],
        &verdict.session_regressions[..verdict.session_regressions.len().min(20)],
        &verdict.unexplained_duplicates[..verdict.unexplained_duplicates.len().min(20)],
    );
    // A record delivered from two stored copies is one the producer re-sent.
    assert!(
        verdict.second_copies as u64 <= resent,
        "stored twice, never re-sent"
    );
    assert!(
        verdict.ordered_pairs > stored.len() / 2,
        "the order was checked"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
