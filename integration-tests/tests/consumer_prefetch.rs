//! Read-ahead is bounded: while a processor is stuck on its first batch, the fetcher reads at most
//! `prefetch_max_records` further records (plus the one batch in hand), instead of the whole shard.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use integration_tests::consume::test_worker_config;
use integration_tests::fault_proxy::Faults;
use integration_tests::{TestEnv, TestTable, random_name};
use kcl::leases::DynamoDbLeaseStore;
use kcl::{Checkpointer, InitialPosition, ProcessRecordsInput, RecordProcessor, Worker};
use tokio::sync::{Notify, Semaphore};

struct Stuck {
    started: Arc<Notify>,
    release: Arc<Semaphore>,
}

#[async_trait]
impl RecordProcessor for Stuck {
    async fn process_records(&mut self, _input: ProcessRecordsInput<'_>) -> kcl::ProcessorResult {
        self.started.notify_one();
        let _ = self.release.acquire().await.map(|p| p.forget());
        Ok(())
    }

    async fn shard_ended(&mut self, checkpointer: &Checkpointer) -> kcl::ProcessorResult {
        let _ = checkpointer.checkpoint().await;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_processor_stops_the_fetcher_at_the_prefetch_bound() {
    let env = TestEnv::new().await;
    let stream = env.create_stream(1).await;
    let table = TestTable::adopt(&env, random_name("app"));
    // 1,000 raw records: with 10 per GetRecords call, 100 calls would read the whole shard.
    for chunk in 0..2 {
        let entries: Vec<PutRecordsRequestEntry> = (0..500)
            .map(|i| {
                PutRecordsRequestEntry::builder()
                    .partition_key(format!("k{chunk}-{i}"))
                    .data(Blob::new(vec![1u8; 10]))
                    .build()
                    .expect("entry")
            })
            .collect();
        env.kinesis
            .put_records()
            .stream_name(&stream.name)
            .set_records(Some(entries))
            .send()
            .await
            .expect("PutRecords");
    }
    let proxy = env.fault_proxy(Faults::default()).await;
    let started = Arc::new(Notify::new());
    let release = Arc::new(Semaphore::new(0));
    let factory = {
        let (started, release) = (started.clone(), release.clone());
        move |_: &str| -> Box<dyn RecordProcessor> {
            Box::new(Stuck {
                started: started.clone(),
                release: release.clone(),
            })
        }
    };
    let config = test_worker_config("w", InitialPosition::TrimHorizon)
        .idle_time_between_reads(Duration::from_millis(10))
        .max_records(10)
        .prefetch_max_records(20);
    let store = Arc::new(DynamoDbLeaseStore::new(
        env.dynamodb.clone(),
        table.name.clone(),
    ));
    let worker = Worker::with_store(
        env.kinesis_client_at(&proxy.url),
        store,
        &stream.name,
        factory,
        config,
    );
    let handle = worker.shutdown_handle();
    let task = tokio::spawn(async move { worker.run().await.expect("worker") });

    tokio::time::timeout(Duration::from_secs(30), started.notified())
        .await
        .expect("first batch delivered");
    // Give an unbounded fetcher ample time to run ahead; a bounded one stops after 20 records.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let calls = proxy.counts.get_records.load(Ordering::Relaxed);
    assert!(
        calls <= 4,
        "the fetcher read ahead {calls} batches of 10 with a bound of 20 records"
    );

    release.add_permits(1_000);
    handle.shutdown();
    task.await.expect("worker task");
}
