//! Multi-stream workers against kinesis-mock and DynamoDB Local: two streams of different shard
//! counts, the second added while two workers run; rows carry the Java KCL's multi-stream key
//! and attributes; every record of both is processed; a removed stream's leases are released
//! and kept.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use integration_tests::consume::{DeliveryLog, test_worker_config};
use integration_tests::{TestEnv, TestTable, random_name};
use kcl::leases::{DynamoDbLeaseStore, Lease, LeaseStore};
use kcl::{InitialPosition, StreamSpec, Worker};

/// Puts `{stream}-{i}` for `i` in `range` (partition key `key-{i}`).
async fn put(env: &TestEnv, stream: &str, range: std::ops::Range<usize>) {
    let entries: Vec<PutRecordsRequestEntry> = range
        .map(|i| {
            PutRecordsRequestEntry::builder()
                .partition_key(format!("key-{i}"))
                .data(Blob::new(format!("{stream}-{i}")))
                .build()
                .unwrap()
        })
        .collect();
    for chunk in entries.chunks(500) {
        let out = env
            .kinesis
            .put_records()
            .stream_name(stream)
            .set_records(Some(chunk.to_vec()))
            .send()
            .await
            .expect("PutRecords");
        assert_eq!(out.failed_record_count(), Some(0));
    }
}

/// The distinct records of `stream` delivered so far.
fn delivered(log: &integration_tests::consume::Log, stream: &str) -> usize {
    let prefix = format!("{stream}-");
    (log.records.iter())
        .map(|(_, _, r)| String::from_utf8_lossy(&r.data).into_owned())
        .filter(|d| d.starts_with(&prefix))
        .collect::<HashSet<_>>()
        .len()
}

/// Polls the table until `condition` holds (30 s at most).
async fn until_leases(
    store: &DynamoDbLeaseStore,
    what: &str,
    condition: impl Fn(&[Lease]) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(leases) = store.list().await
            && condition(&leases)
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_streams_one_added_while_running_share_one_table() {
    integration_tests::log_capture::warnings_to_test_output();
    let env = TestEnv::new().await;
    let (a, b) = (env.create_stream(3).await, env.create_stream(1).await);
    let table = TestTable::adopt(&env, random_name("app"));
    let store = DynamoDbLeaseStore::new(env.dynamodb.clone(), table.name.clone());
    let log = DeliveryLog::default();
    put(&env, &a.name, 0..300).await;
    put(&env, &b.name, 0..100).await;
    let mut running = Vec::new();
    for w in ["w0", "w1"] {
        let worker = Worker::builder()
            .sdk_config(&env.sdk_config)
            .application_name(&table.name)
            .streams([StreamSpec::new(&a.name)])
            .processor_factory(log.factory(w))
            .config(test_worker_config(w, InitialPosition::TrimHorizon))
            .build()
            .unwrap();
        let streams = worker.streams_handle().unwrap();
        let stop = worker.shutdown_handle();
        running.push((streams, stop, tokio::spawn(worker.run())));
    }
    log.wait_for("stream a", Duration::from_secs(30), |l| {
        delivered(l, &a.name) == 300
    })
    .await;
    for (streams, _, _) in &running {
        assert!(streams.add(b.name.as_str()));
    }
    put(&env, &b.name, 100..200).await;
    log.wait_for(
        "stream b, added while running",
        Duration::from_secs(30),
        |l| delivered(l, &b.name) == 200,
    )
    .await;
    until_leases(&store, "4 leases, 2 per worker", |leases| {
        let mut owners: BTreeMap<&str, usize> = BTreeMap::new();
        for l in leases {
            *owners.entry(l.owner.as_deref().unwrap_or("-")).or_default() += 1;
        }
        leases.len() == 4 && owners.get("w0") == Some(&2) && owners.get("w1") == Some(&2)
    })
    .await;

    // The rows as the Java KCL's multi-stream leases: key account:stream:creationEpoch:shardId,
    // with streamName (the identifier) and shardId.
    let rows = env
        .dynamodb
        .scan()
        .table_name(&table.name)
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default();
    assert_eq!(rows.len(), 4);
    for (stream, shards) in [(&a, 3), (&b, 1)] {
        let summary = env
            .kinesis
            .describe_stream_summary()
            .stream_name(&stream.name)
            .send()
            .await
            .unwrap();
        let description = summary.stream_description_summary().unwrap();
        let account = description.stream_arn().split(':').nth(4).unwrap();
        let epoch = description.stream_creation_timestamp().secs();
        let identifier = format!("{account}:{}:{epoch}", stream.name);
        let of_stream: Vec<_> = rows
            .iter()
            .filter(|r| r.get("streamName") == Some(&AttributeValue::S(identifier.clone())))
            .collect();
        assert_eq!(of_stream.len(), shards, "{identifier}: {rows:?}");
        for row in of_stream {
            let shard = row["shardId"].as_s().unwrap();
            assert!(shard.starts_with("shardId-"), "{row:?}");
            assert_eq!(
                row["leaseKey"].as_s().unwrap(),
                &format!("{identifier}:{shard}")
            );
        }
    }

    // Removing a: its leases are released (after shutdown_requested) and kept.
    for (streams, _, _) in &running {
        assert!(streams.remove(&a.name));
    }
    until_leases(&store, "a's leases released", |leases| {
        let of_a: Vec<_> = leases
            .iter()
            .filter(|l| l.key.contains(&format!(":{}:", a.name)))
            .collect();
        of_a.len() == 3 && of_a.iter().all(|l| l.owner.is_none())
    })
    .await;
    for (_, stop, _) in &running {
        stop.shutdown();
    }
    for (_, _, task) in running {
        task.await.unwrap().expect("worker");
    }
    let log = log.snapshot();
    assert_eq!(
        (delivered(&log, &a.name), delivered(&log, &b.name)),
        (300, 200)
    );
}
