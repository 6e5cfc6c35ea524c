//! The consumer against kinesis-mock and DynamoDB Local: exactly-once delivery in order for one
//! worker (polling, and through enhanced fan-out), resume after a checkpoint (also inside an aggregate), raw pass-through of a corrupted
//! aggregate, and graceful hand-over to another worker.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use bytes::Bytes;
use integration_tests::consume::{DeliveryLog, test_worker_config};
use integration_tests::{TestEnv, TestStream, TestTable, random_name};
use kcl::leases::{CheckpointPosition, DynamoDbLeaseStore, LeaseStore};
use kcl::{InitialPosition, Worker, WorkerConfig};
use kinesis_format::AggregateBuilder;
use kpl::{Producer, ProducerConfig, UserRecord};

/// Short timings: failover 1.5 s, taking every 200 ms, reads every 50 ms when caught up.
fn fast(worker: &str) -> WorkerConfig {
    test_worker_config(worker, InitialPosition::TrimHorizon)
        .parent_poll_interval(Duration::from_millis(200))
}

/// How a worker reads.
#[derive(Clone, Copy, Debug)]
enum Mode {
    Polling,
    FanOut,
}

fn start(
    env: &TestEnv,
    table: &str,
    stream: &TestStream,
    log: &DeliveryLog,
    worker: &str,
) -> (kcl::ShutdownHandle, tokio::task::JoinHandle<()>) {
    start_in(Mode::Polling, env, table, stream, log, worker)
}

fn start_in(
    mode: Mode,
    env: &TestEnv,
    table: &str,
    stream: &TestStream,
    log: &DeliveryLog,
    worker: &str,
) -> (kcl::ShutdownHandle, tokio::task::JoinHandle<()>) {
    let config = match mode {
        Mode::Polling => fast(worker),
        Mode::FanOut => fast(worker).enhanced_fan_out(table),
    };
    let w = Worker::new(
        &env.sdk_config,
        table,
        &stream.name,
        log.factory(worker),
        config,
    );
    let handle = w.shutdown_handle();
    let task = tokio::spawn(async move { w.run().await.expect("worker runs") });
    (handle, task)
}

async fn produce(env: &TestEnv, stream: &str, n: usize, tag: &str) -> Vec<(String, Bytes)> {
    let producer = Producer::new(&env.sdk_config, ProducerConfig::default()).expect("producer");
    let mut futures = Vec::new();
    let mut sent = Vec::new();
    for i in 0..n {
        let (key, data) = (
            format!("{tag}-key-{}", i % 97),
            Bytes::from(format!("{tag}-{i}")),
        );
        sent.push((key.clone(), data.clone()));
        futures.push(
            producer
                .put(UserRecord::new(stream, key, data))
                .await
                .expect("accepted"),
        );
    }
    for f in futures {
        f.await.expect("stored");
    }
    producer.shutdown().await;
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_delivers_every_record_once_in_order_and_resumes_after_its_checkpoint() {
    delivers_once_in_order_and_resumes(Mode::Polling).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_enhanced_fan_out_too() {
    delivers_once_in_order_and_resumes(Mode::FanOut).await;
}

async fn delivers_once_in_order_and_resumes(mode: Mode) {
    integration_tests::log_capture::warnings_to_test_output();
    let env = TestEnv::new().await;
    let stream = env.create_stream(4).await;
    let table = TestTable::adopt(&env, random_name("app"));

    // Aggregated records through the producer, raw ones directly, and one corrupted aggregate.
    let mut expected = produce(&env, &stream.name, 49_000, "agg").await;
    for chunk in 0..2 {
        let mut entries = Vec::new();
        for i in chunk * 500..(chunk + 1) * 500 {
            let (key, data) = (format!("raw-{i}"), Bytes::from(format!("raw-{i}")));
            entries.push(
                aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                    .partition_key(&key)
                    .data(Blob::new(data.to_vec()))
                    .build()
                    .expect("entry"),
            );
            expected.push((key, data));
        }
        let out = env
            .kinesis
            .put_records()
            .stream_name(&stream.name)
            .set_records(Some(entries))
            .send()
            .await
            .expect("PutRecords");
        assert_eq!(out.failed_record_count(), Some(0));
    }
    let mut corrupted = AggregateBuilder::new();
    corrupted.add("inner-1", None, Bytes::from_static(b"a"));
    corrupted.add("inner-2", None, Bytes::from_static(b"b"));
    let mut corrupted = corrupted.finish().to_vec();
    *corrupted.last_mut().expect("bytes") ^= 0xff;
    env.kinesis
        .put_record()
        .stream_name(&stream.name)
        .partition_key("corrupted")
        .data(Blob::new(corrupted.clone()))
        .send()
        .await
        .expect("PutRecord");
    expected.push(("corrupted".into(), Bytes::from(corrupted)));

    let log = DeliveryLog::default();
    let (handle, task) = start_in(mode, &env, &table.name, &stream, &log, "w1");
    let n = expected.len();
    log.wait_for("every record", Duration::from_secs(60), |l| {
        l.records.len() >= n
    })
    .await;
    handle.shutdown();
    task.await.expect("worker task");

    let log_now = log.snapshot();
    assert_eq!(log_now.records.len(), n, "each record delivered once");
    let mut got: Vec<(String, Bytes)> = log_now
        .records
        .iter()
        .map(|(_, _, r)| (r.partition_key.to_string(), r.data.clone()))
        .collect();
    got.sort();
    expected.sort();
    assert!(
        got == expected,
        "delivered multiset differs from what was written"
    );
    // Order: strictly increasing (sequence, sub-sequence) within each shard.
    let mut last: BTreeMap<&str, kinesis_format::ExtendedSequenceNumber> = BTreeMap::new();
    for (_, shard, r) in &log_now.records {
        if let Some(prev) = last.get(shard.as_str()) {
            assert!(
                r.position() > *prev,
                "out of order on {shard}: {} after {prev}",
                r.position()
            );
        }
        last.insert(shard, r.position());
    }
    assert!(
        log_now
            .records
            .iter()
            .any(|(_, _, r)| r.partition_key.as_ref() == "corrupted" && !r.aggregated)
    );
    assert_eq!(
        log_now.shutdown_requested.len(),
        4,
        "every processor got shutdown_requested"
    );

    // Checkpoints are stored at the last delivered record of each shard, leases released.
    let store = DynamoDbLeaseStore::new(env.dynamodb.clone(), table.name.clone());
    for lease in store.list().await.expect("leases") {
        assert_eq!(lease.owner, None, "released on graceful shutdown");
        let expected = last
            .get(lease.key.as_str())
            .map(|p| CheckpointPosition::Sequence {
                sequence: p.sequence.clone(),
                sub_sequence: p.sub_sequence,
            });
        assert_eq!(
            Some(lease.checkpoint),
            expected,
            "checkpoint of {}",
            lease.key
        );
    }

    // A restarted worker delivers nothing from before the checkpoints: only what is new.
    let after = produce(&env, &stream.name, 20, "after").await;
    let log2 = DeliveryLog::default();
    let (handle2, task2) = start_in(mode, &env, &table.name, &stream, &log2, "w2");
    log2.wait_for("the new records", Duration::from_secs(30), |l| {
        l.records.len() >= after.len()
    })
    .await;
    handle2.shutdown();
    task2.await.expect("worker task");
    let keys: HashSet<String> = log2
        .snapshot()
        .records
        .iter()
        .map(|(_, _, r)| r.partition_key.to_string())
        .collect();
    assert!(
        keys.iter().all(|k| k.starts_with("after-")),
        "re-delivered old records: {keys:?}"
    );
    assert_eq!(log2.snapshot().records.len(), after.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_inside_an_aggregate_resumes_at_the_next_sub_record() {
    integration_tests::log_capture::warnings_to_test_output();
    let env = TestEnv::new().await;
    let stream = env.create_stream(1).await;
    let table = TestTable::adopt(&env, random_name("app"));
    let mut builder = AggregateBuilder::new();
    for i in 0..10u8 {
        builder.add(&format!("k{i}"), None, Bytes::from(vec![i]));
    }
    let put = env
        .kinesis
        .put_record()
        .stream_name(&stream.name)
        .partition_key("a")
        .data(Blob::new(builder.finish().to_vec()))
        .send()
        .await
        .expect("PutRecord");

    // A lease checkpointed at sub-record 3 of that aggregate, as a worker that stopped there left it.
    let store = DynamoDbLeaseStore::new(env.dynamodb.clone(), table.name.clone());
    store.ensure_table().await.expect("table");
    let shard = stream.open_shards().await[0].shard_id().to_owned();
    let lease = kcl::leases::Lease::new(
        &shard,
        CheckpointPosition::Sequence {
            sequence: kinesis_format::SequenceNumber::parse(put.sequence_number())
                .expect("sequence"),
            sub_sequence: 3,
        },
    );
    store.create_if_absent(&lease).await.expect("lease");

    let log = DeliveryLog::default();
    let (handle, task) = start(&env, &table.name, &stream, &log, "w1");
    log.wait_for("the rest of the aggregate", Duration::from_secs(30), |l| {
        l.records.len() >= 6
    })
    .await;
    handle.shutdown();
    task.await.expect("worker task");
    let subs: Vec<u64> = log
        .snapshot()
        .records
        .iter()
        .map(|(_, _, r)| r.sub_sequence_number)
        .collect();
    assert_eq!(subs, [4, 5, 6, 7, 8, 9]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_hands_every_lease_to_another_worker_at_once() {
    integration_tests::log_capture::warnings_to_test_output();
    let env = TestEnv::new().await;
    let stream = env.create_stream(2).await;
    let table = TestTable::adopt(&env, random_name("app"));
    produce(&env, &stream.name, 200, "first").await;
    let log = DeliveryLog::default();
    let (handle_a, task_a) = start(&env, &table.name, &stream, &log, "a");
    log.wait_for("the first records", Duration::from_secs(30), |l| {
        l.records.len() >= 200
    })
    .await;

    // B starts while A holds everything, with a failover time far longer than the test waits.
    let slow_failover = fast("b")
        .failover_time(Duration::from_secs(60))
        .take_interval(Duration::from_millis(200));
    let w = Worker::new(
        &env.sdk_config,
        &table.name,
        &stream.name,
        log.factory("b"),
        slow_failover,
    );
    let handle_b = w.shutdown_handle();
    let task_b = tokio::spawn(async move { w.run().await.expect("worker b") });

    let released_at = tokio::time::Instant::now();
    handle_a.shutdown();
    task_a.await.expect("worker a");
    let store = DynamoDbLeaseStore::new(env.dynamodb.clone(), table.name.clone());
    let leases = store.list().await.expect("leases");
    assert!(
        leases.iter().all(|l| l.owner.as_deref() != Some("a")),
        "A released its leases"
    );
    assert_eq!(log.snapshot().shutdown_requested.len(), 2);

    // B continues from A's checkpoints: new records arrive at B, old ones are not repeated.
    produce(&env, &stream.name, 50, "second").await;
    log.wait_for("B to take over", Duration::from_secs(20), |l| {
        l.records.iter().filter(|(w, _, _)| w == "b").count() >= 50
    })
    .await;
    assert!(
        released_at.elapsed() < Duration::from_secs(20),
        "taken well before B's 60 s failover time"
    );
    let from_b: Vec<_> = log
        .snapshot()
        .records
        .iter()
        .filter(|(w, _, _)| w == "b")
        .map(|(_, _, r)| r.partition_key.to_string())
        .collect();
    assert!(
        from_b.iter().all(|k| k.starts_with("second-")),
        "B re-delivered A's records"
    );
    handle_b.shutdown();
    task_b.await.expect("worker b");
}
