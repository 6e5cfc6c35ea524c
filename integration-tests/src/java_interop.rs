//! What the Java KCL interop tests share: a stream with an application name whose tables go
//! with the test, our worker on that table, records put through our producer, and the
//! (partition key, data) view that compares what each consumer delivered.

use std::collections::HashSet;

use bytes::Bytes;
use kcl::{ConsumerRecord, InitialPosition, Worker};
use kpl::{Producer, ProducerConfig, UserRecord};
use rand::Rng;

use crate::consume::test_worker_config;
use crate::java_kcl::JavaOutput;
use crate::{TestEnv, TestTable, random_name};

/// (partition key, data) of a user record.
pub type Put = (String, Vec<u8>);

/// The Java consumer slowed down: one Kinesis record (an aggregate of about 250 user records)
/// per batch, and a pause after each, so that a test can act while it is part way through.
pub const SLOW: [(&str, &str); 2] = [
    ("INTEROP_MAX_RECORDS", "1"),
    ("INTEROP_BATCH_DELAY_MS", "500"),
];

/// A stream of `shards` shards and an application name whose tables go with the test.
pub async fn setup(
    prefix: &str,
    shards: i32,
) -> (TestEnv, crate::TestStream, String, Vec<TestTable>) {
    let env = TestEnv::new().await;
    let stream = env.create_stream(shards).await;
    let app = random_name(prefix);
    let tables = tables(&env, &app);
    (env, stream, app, tables)
}

/// Our worker `rust-0` on the application's table, reading from TRIM_HORIZON where it has no
/// checkpoint.
pub fn rust_worker(
    env: &TestEnv,
    app: &str,
    stream: &str,
    factory: impl kcl::RecordProcessorFactory,
) -> Worker {
    Worker::new(
        &env.sdk_config,
        app,
        stream,
        factory,
        test_worker_config("rust-0", InitialPosition::TrimHorizon),
    )
}

/// The lease table and the two tables KCL 3.x adds beside it, deleted at the end.
pub fn tables(env: &TestEnv, app: &str) -> Vec<TestTable> {
    ["", "-CoordinatorState", "-WorkerMetricStats"]
        .iter()
        .map(|suffix| TestTable::adopt(env, format!("{app}{suffix}")))
        .collect()
}

/// Puts records `range` through our producer (aggregated; random partition keys), returns them
/// once every one is stored; `between` runs after the first half is stored.
pub async fn produce(
    env: &TestEnv,
    stream: &str,
    range: std::ops::Range<usize>,
    between: impl AsyncFnOnce(),
) -> Vec<Put> {
    produce_with_stats(env, stream, range, between).await.0
}

/// [`produce`], with the producer's statistics.
pub async fn produce_with_stats(
    env: &TestEnv,
    stream: &str,
    range: std::ops::Range<usize>,
    between: impl AsyncFnOnce(),
) -> (Vec<Put>, kpl::ProducerStats) {
    let producer = Producer::new(&env.sdk_config, ProducerConfig::default()).expect("producer");
    let middle = range.start + range.len() / 2;
    let mut between = Some(between);
    let mut puts = Vec::new();
    let mut pending: Vec<kpl::PutFuture> = Vec::new();
    for i in range {
        if i == middle {
            for f in pending.drain(..) {
                f.await.expect("stored");
            }
            if let Some(between) = between.take() {
                between().await;
            }
        }
        let key = format!("key-{:08x}", rand::rng().random::<u32>());
        let data = format!("record-{i}").into_bytes();
        let record = UserRecord::new(stream, key.clone(), Bytes::from(data.clone()));
        pending.push(producer.put(record).await.expect("accepted"));
        puts.push((key, data));
    }
    for f in pending {
        f.await.expect("stored");
    }
    let stats = producer.stats();
    producer.shutdown().await;
    (puts, stats)
}

pub fn java_puts(output: &JavaOutput) -> HashSet<Put> {
    (output.deliveries.iter())
        .map(|d| (d.key.clone(), d.data.clone()))
        .collect()
}

pub fn as_put(r: &ConsumerRecord) -> Put {
    (r.partition_key.to_string(), r.data.to_vec())
}
