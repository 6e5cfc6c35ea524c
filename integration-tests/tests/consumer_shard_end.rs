//! A processor that does not checkpoint in `shard_ended`: the shard's children never start, and
//! the log names the shard and says why. (The log capture is global, so this is its own binary.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use integration_tests::consume::test_worker_config;
use integration_tests::log_capture::Captured;
use integration_tests::{TestEnv, TestTable, random_name};
use kcl::leases::{DynamoDbLeaseStore, LeaseStore};
use kcl::{Checkpointer, InitialPosition, ProcessRecordsInput, RecordProcessor, Worker};
use tokio::sync::Notify;

#[derive(Clone, Default)]
struct Seen {
    shards_with_records: Arc<Mutex<Vec<String>>>,
    shard_ended_calls: Arc<Mutex<Vec<String>>>,
    changed: Arc<Notify>,
}

struct Forgetful {
    shard: String,
    seen: Seen,
}

#[async_trait]
impl RecordProcessor for Forgetful {
    async fn process_records(&mut self, input: ProcessRecordsInput<'_>) -> kcl::ProcessorResult {
        if !input.records.is_empty() {
            self.seen
                .shards_with_records
                .lock()
                .expect("seen")
                .push(self.shard.clone());
        }
        let _ = input.checkpointer.checkpoint().await;
        Ok(())
    }

    async fn shard_ended(&mut self, _checkpointer: &Checkpointer) -> kcl::ProcessorResult {
        // Forgets to checkpoint SHARD_END.
        self.seen
            .shard_ended_calls
            .lock()
            .expect("seen")
            .push(self.shard.clone());
        self.seen.changed.notify_waiters();
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_wait_while_the_parent_is_not_checkpointed_at_shard_end_and_the_log_says_why() {
    let captured = Captured::install();

    let env = TestEnv::new().await;
    let stream = env.create_stream(1).await;
    let table = TestTable::adopt(&env, random_name("app"));
    let parent = stream.open_shards().await[0].clone();
    env.kinesis
        .put_record()
        .stream_name(&stream.name)
        .partition_key("before")
        .data(aws_sdk_kinesis::primitives::Blob::new(
            b"parent record".to_vec(),
        ))
        .send()
        .await
        .expect("PutRecord");
    env.kinesis
        .split_shard()
        .stream_name(&stream.name)
        .shard_to_split(parent.shard_id())
        .new_starting_hash_key((u128::MAX / 2).to_string())
        .send()
        .await
        .expect("SplitShard");
    env.wait_stream_active(&stream.name).await;
    for i in 0..20 {
        env.kinesis
            .put_record()
            .stream_name(&stream.name)
            .partition_key(format!("after-{i}"))
            .data(aws_sdk_kinesis::primitives::Blob::new(
                Bytes::from("child record").to_vec(),
            ))
            .send()
            .await
            .expect("PutRecord");
    }

    let seen = Seen::default();
    let factory = {
        let seen = seen.clone();
        move |shard: &str| -> Box<dyn RecordProcessor> {
            Box::new(Forgetful {
                shard: shard.to_owned(),
                seen: seen.clone(),
            })
        }
    };
    let config = test_worker_config("w", InitialPosition::TrimHorizon);
    let worker = Worker::new(&env.sdk_config, &table.name, &stream.name, factory, config);
    let handle = worker.shutdown_handle();
    let task = tokio::spawn(async move { worker.run().await.expect("worker") });

    // shard_ended is offered again and again (every parent poll interval) while it does not checkpoint.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let notified = seen.changed.notified();
        if seen.shard_ended_calls.lock().expect("seen").len() >= 3 {
            break;
        }
        tokio::time::timeout_at(deadline, notified)
            .await
            .expect("shard_ended offered repeatedly");
    }
    handle.shutdown();
    task.await.expect("worker");

    let with_records = seen.shards_with_records.lock().expect("seen").clone();
    assert!(
        with_records.iter().all(|s| s == parent.shard_id()),
        "a child shard started: {with_records:?}"
    );
    let store = DynamoDbLeaseStore::new(env.dynamodb.clone(), table.name.clone());
    let parent_lease = store
        .get(parent.shard_id())
        .await
        .expect("get")
        .expect("parent lease");
    assert!(!parent_lease.is_finished());
    assert_eq!(
        parent_lease.child_shard_ids.len(),
        2,
        "child shards recorded on the parent"
    );
    let text = captured.text();
    let line = text
        .lines()
        .find(|l| l.contains("did not checkpoint SHARD_END"))
        .unwrap_or_else(|| panic!("no log line explains it:\n{text}"));
    assert!(
        line.contains(parent.shard_id()),
        "the log names the shard: {line}"
    );
    assert!(
        text.contains("waits until its parents reach SHARD_END"),
        "children say what they wait for"
    );
}
