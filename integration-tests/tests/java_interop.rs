//! Interop with the real Java KCL 3.1.3 (installed by `scripts/java-kcl.sh`; see
//! `integration_tests::java_kcl`), on kinesis-mock and DynamoDB Local:
//!
//! - (a) the Java KCL reads every record our producer puts (aggregated, random keys, a split
//!   while producing), bytes equal;
//! - (b) migration: the Java KCL consumes part of a stream and is stopped (gracefully, or with
//!   SIGKILL); our worker on the same lease table goes on after Java's checkpoints: nothing
//!   lost, nothing at or before a checkpoint delivered again, Java's attributes kept;
//! - (c) the reverse: our worker checkpoints inside an aggregate (sub-sequence > 0) and stops; the
//!   Java KCL resumes on our table with nothing lost and nothing at or before it again;
//! - (d) a planned move: our worker joins a running Java KCL worker and asks it for a lease
//!   (KCL 3.x's graceful hand-off): Java's processor checkpoints and stops, ours starts from its
//!   checkpoint, no record is processed twice, and nothing moves afterwards;
//! - (e), rolling back from our worker to Java: `java_interop_rollback.rs`.
//!
//! What these tests share is `integration_tests::java_interop`.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use integration_tests::consume::DeliveryLog;
use integration_tests::java_interop::{
    Put, SLOW, as_put, java_puts, produce, produce_with_stats, rust_worker, setup,
};
use integration_tests::java_kcl::JavaKcl;
use integration_tests::java_kcl::rows::{checkpoint, owners, rows};
use kcl::{Checkpointer, ConsumerRecord, ProcessRecordsInput, RecordProcessor};
use kinesis_format::ExtendedSequenceNumber;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_the_java_kcl_reads_every_record_our_producer_puts_across_a_split() {
    let (env, stream, app, _tables) = setup("java-a", 2).await;
    // Started before the split: kinesis-mock lists child shards even for a TRIM_HORIZON
    // listing, which a KCL starting on an empty table after a split refuses.
    let mut java = JavaKcl::start(&env, &stream.name, &app, "java-0");
    java.wait_for("both shards initialised", Duration::from_secs(120), |o| {
        o.initialized.len() >= 2
    })
    .await;
    let parent = stream.open_shards().await[0].clone();
    let (puts, stats) = produce_with_stats(&env, &stream.name, 0..4_000, async || {
        stream.split_in_half(&parent).await;
        env.wait_stream_active(&stream.name).await;
    })
    .await;
    let expected: HashSet<Put> = puts.iter().cloned().collect();
    java.wait_for("every record", Duration::from_secs(120), |o| {
        java_puts(o).is_superset(&expected)
    })
    .await;
    let output = java.output();
    let unknown: Vec<_> = java_puts(&output).difference(&expected).cloned().collect();
    assert!(unknown.is_empty(), "records nobody put: {unknown:?}");
    assert!(
        output.ended.iter().any(|s| s == parent.shard_id()),
        "the parent was read to its end"
    );
    // The Java KCL delivers an aggregate's sub-records whatever shard they landed on, and the
    // producer re-sends those that landed on the wrong child after the split: those are the
    // only copies it may see twice.
    let twice = output.deliveries.len() - expected.len();
    assert!(
        twice as u64 <= stats.wrong_shard_resent,
        "{twice} records delivered twice, {} re-sent",
        stats.wrong_shard_resent
    );
    let mut per_shard: BTreeMap<&str, usize> = BTreeMap::new();
    for d in &output.deliveries {
        *per_shard.entry(d.shard.as_str()).or_default() += 1;
    }
    eprintln!(
        "java interop (a): {} records put across a split, {} delivered by the Java KCL ({} distinct, bytes equal), per shard {per_shard:?}; producer: {} records of aggregates on the wrong child re-sent",
        puts.len(),
        output.deliveries.len(),
        expected.len(),
        stats.wrong_shard_resent
    );
}

/// (b): the Java KCL consumes part of the stream and stops (`kill`: SIGKILL, else SIGTERM);
/// our worker goes on from its checkpoints.
async fn java_then_rust(kill: bool) {
    let (env, stream, app, _tables) = setup("java-b", 2).await;
    let puts = produce(&env, &stream.name, 0..2_000, async || {}).await;
    // Slowed down: it is stopped a quarter of the way through.
    let mut java = JavaKcl::start_with(&env, &stream.name, &app, "java-0", &SLOW);
    java.wait_for(
        "a checkpoint on both shards and 500 records",
        Duration::from_secs(120),
        |o| {
            let shards: HashSet<&str> = o.checkpoints.iter().map(|(s, _)| s.as_str()).collect();
            shards.len() == 2 && java_puts(o).len() >= 500
        },
    )
    .await;
    if kill {
        java.kill().await;
    } else {
        java.terminate().await;
    }
    let by_java = java.output();
    let before = rows(&env, &app).await;
    let java_checkpoints: BTreeMap<String, ExtendedSequenceNumber> = before
        .iter()
        .filter_map(|(k, row)| Some((k.clone(), checkpoint(row)?)))
        .collect();
    assert_eq!(
        java_checkpoints.len(),
        2,
        "Java checkpointed both shards: {before:?}"
    );

    let log = DeliveryLog::default();
    let worker = rust_worker(&env, &app, &stream.name, log.factory("rust-0"));
    let (stop, task) = integration_tests::consume::spawn_worker(worker);
    let all: HashSet<Put> = puts.iter().cloned().collect();
    let java_got = java_puts(&by_java);
    log.wait_for("the rest of the records", Duration::from_secs(60), |l| {
        let mut got = java_got.clone();
        got.extend(l.records.iter().map(|(_, _, r)| as_put(r)));
        got.is_superset(&all)
    })
    .await;
    stop.shutdown();
    task.await.unwrap().expect("worker");
    let ours = log.snapshot().records;
    for (_, shard, r) in &ours {
        let java = &java_checkpoints[shard];
        assert!(
            r.position() > *java,
            "{shard}: {} delivered again, at or before Java's checkpoint {java}",
            r.position()
        );
    }
    assert!(
        !ours.is_empty(),
        "Java was stopped part way: our worker delivers the rest"
    );
    // Java's attributes survive our worker's writes (but `leaseOwner`, which a release removes).
    let after = rows(&env, &app).await;
    for (key, row) in &before {
        let kept: BTreeSet<&String> = after[key].keys().collect();
        let missing: Vec<&String> = (row.keys())
            .filter(|a| *a != "leaseOwner" && !kept.contains(a))
            .collect();
        assert!(missing.is_empty(), "{key}: {missing:?} dropped");
    }
    let again = ours
        .iter()
        .filter(|(_, _, r)| java_got.contains(&as_put(r)))
        .count();
    eprintln!(
        "java interop (b, {}): {} records; the Java KCL delivered {} and checkpointed {:?}; ours delivered {} ({again} delivered by Java after its last checkpoint); attributes kept: {:?}",
        if kill { "SIGKILL" } else { "SIGTERM" },
        all.len(),
        by_java.deliveries.len(),
        java_checkpoints
            .values()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ours.len(),
        before
            .values()
            .next()
            .map(|r| r.keys().collect::<BTreeSet<_>>()),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b1_our_worker_goes_on_after_a_java_kcl_stopped_gracefully() {
    java_then_rust(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b2_our_worker_goes_on_after_a_java_kcl_killed() {
    java_then_rust(true).await;
}

/// Delivers until `stop_after` records were seen, then checkpoints once at the first record past
/// it that sits inside an aggregate (sub-sequence > 0), and never again.
struct StopInsideAnAggregate {
    seen: Arc<Mutex<Vec<ConsumerRecord>>>,
    checkpointed: Arc<Mutex<Option<ExtendedSequenceNumber>>>,
    stop_after: usize,
}

#[async_trait]
impl RecordProcessor for StopInsideAnAggregate {
    async fn process_records(&mut self, input: ProcessRecordsInput<'_>) -> kcl::ProcessorResult {
        if self.checkpointed.lock().unwrap().is_some() {
            return Ok(());
        }
        let stop_at = {
            let mut seen = self.seen.lock().unwrap();
            let mut stop_at = None;
            for r in input.records {
                let at = r.position();
                let inside = r.sub_sequence_number > 0;
                seen.push(r);
                if seen.len() >= self.stop_after && inside {
                    stop_at = Some(at);
                    break;
                }
            }
            stop_at
        };
        if let Some(at) = stop_at {
            input
                .checkpointer
                .checkpoint_at(&at.sequence, at.sub_sequence)
                .await?;
            *self.checkpointed.lock().unwrap() = Some(at);
        }
        Ok(())
    }

    async fn shard_ended(&mut self, _: &Checkpointer) -> kcl::ProcessorResult {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_the_java_kcl_resumes_from_our_checkpoint_inside_an_aggregate() {
    let (env, stream, app, _tables) = setup("java-c", 1).await;
    let puts = produce(&env, &stream.name, 0..1_000, async || {}).await;
    let (seen, checkpointed) = (Arc::default(), Arc::default());
    let factory = {
        let (seen, checkpointed) = (Arc::clone(&seen), Arc::clone(&checkpointed));
        move |_: &str| -> Box<dyn RecordProcessor> {
            Box::new(StopInsideAnAggregate {
                seen: Arc::clone(&seen),
                checkpointed: Arc::clone(&checkpointed),
                stop_after: 500,
            })
        }
    };
    let worker = rust_worker(&env, &app, &stream.name, factory);
    let (stop, task) = integration_tests::consume::spawn_worker(worker);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let ours_at = loop {
        if let Some(at) = checkpointed.lock().unwrap().clone() {
            break at;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no checkpoint inside an aggregate"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stop.shutdown();
    task.await.unwrap().expect("worker");
    let stored = rows(&env, &app).await;
    let row = stored.values().next().expect("one lease");
    assert_eq!(checkpoint(row), Some(ours_at.clone()), "{row:?}");

    let ours_up_to: Vec<Put> = (seen.lock().unwrap().iter())
        .filter(|r: &&ConsumerRecord| r.position() <= ours_at)
        .map(as_put)
        .collect();
    let mut java = JavaKcl::start(&env, &stream.name, &app, "java-0");
    let all: HashSet<Put> = puts.iter().cloned().collect();
    java.wait_for(
        "the records after our checkpoint",
        Duration::from_secs(120),
        |o| {
            let mut got = java_puts(o);
            got.extend(ours_up_to.iter().cloned());
            got.is_superset(&all)
        },
    )
    .await;
    let output = java.output();
    let again: Vec<_> = (output.deliveries.iter())
        .filter(|d| d.position <= ours_at)
        .map(|d| d.position.to_string())
        .collect();
    assert!(again.is_empty(), "delivered again by Java: {again:?}");
    eprintln!(
        "java interop (c): {} records; ours checkpointed at {ours_at} (inside an aggregate) after {}; the Java KCL delivered the other {}",
        all.len(),
        ours_up_to.len(),
        output.deliveries.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d_a_planned_move_from_a_java_worker_to_ours_repeats_nothing() {
    let (env, stream, app, _tables) = setup("java-d", 2).await;
    let puts = produce(&env, &stream.name, 0..400, async || {}).await;
    // Slowed down, so that the move happens while it is still reading.
    let mut java = JavaKcl::start_with(&env, &stream.name, &app, "java-0", &SLOW);
    java.wait_for("both shards", Duration::from_secs(120), |o| {
        o.initialized.len() == 2
    })
    .await;
    // Ours joins: it asks Java for one lease (a graceful hand-off, KCL 3.x's checkpointOwner).
    let log = DeliveryLog::default();
    let worker = rust_worker(&env, &app, &stream.name, log.factory("rust-0"));
    let (stop, task) = integration_tests::consume::spawn_worker(worker);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let moved = loop {
        let now = owners(&env, &app).await;
        let ours: Vec<&String> = (now.iter())
            .filter(|(_, (owner, from))| owner == "rust-0" && from.is_none())
            .map(|(k, _)| k)
            .collect();
        if let [one] = ours.as_slice() {
            break ((*one).clone(), now);
        }
        assert!(tokio::time::Instant::now() < deadline, "no move: {now:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (shard, assignment) = moved;
    java.wait_for(
        "Java's processor asked to stop",
        Duration::from_secs(10),
        |o| o.shutdown_requested.contains(&shard),
    )
    .await;
    // Nobody moves anything afterwards (Java's leader leaves our lease alone).
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(owners(&env, &app).await, assignment, "a lease moved again");
    let all: HashSet<Put> = puts.iter().cloned().collect();
    let java_got = java_puts(&java.output());
    log.wait_for("every record", Duration::from_secs(60), |l| {
        let mut got = java_got.clone();
        got.extend(java_puts(&java.output()));
        got.extend(l.records.iter().map(|(_, _, r)| as_put(r)));
        got.is_superset(&all)
    })
    .await;
    stop.shutdown();
    task.await.unwrap().expect("worker");
    java.terminate().await;
    let (by_java, ours) = (java.output().deliveries.len(), log.snapshot().records.len());
    assert_eq!(by_java + ours, all.len(), "every record exactly once");
    eprintln!(
        "java interop (d): {} records; a planned move of {shard} from the Java KCL to ours: Java delivered {by_java}, ours {ours}, none twice; no lease moved in the 10 s after",
        all.len()
    );
}
