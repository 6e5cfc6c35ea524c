//! Enhanced fan-out's own metrics, on the in-memory Kinesis under tokio's paused clock: one
//! `SubscribeToShard.Calls` per shard and five minutes (subscriptions end after five), and a
//! subscription taken over by another (a restarted worker's, say) counted in
//! `SubscribeToShard.Failures` as `in_use`. (A metrics recorder is global to the process, so this
//! test has its own test binary.)

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

mod common;

use kcl::leases::MemoryLeaseStore;
use kcl::{RecordProcessor, Worker};
use kinesis_api::memory::MemoryKinesis;
use kinesis_api::{IteratorStart, Kinesis, StreamRef};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

/// The counters since the last snapshot, as (name, labels, count), those at zero left out. A
/// snapshot resets every value, so one is taken for all of them.
type Counts = Vec<(String, BTreeMap<String, String>, u64)>;

fn counters(snapshotter: &Snapshotter) -> Counts {
    (snapshotter.snapshot().into_vec().into_iter())
        .filter_map(|(key, _, _, value)| match value {
            DebugValue::Counter(n @ 1..) => Some((
                key.key().name().to_owned(),
                (key.key().labels())
                    .map(|l| (l.key().to_owned(), l.value().to_owned()))
                    .collect(),
                n,
            )),
            _ => None,
        })
        .collect()
}

/// The counts of `name`, summed by the value of their label `by`.
fn of(counts: &Counts, name: &str, by: &str) -> BTreeMap<String, u64> {
    let mut sums = BTreeMap::new();
    for (n, labels, count) in counts {
        if n == name {
            let label = labels.get(by).cloned().unwrap_or_default();
            *sums.entry(label).or_default() += count;
        }
    }
    sums
}

#[tokio::test(start_paused = true)]
async fn subscriptions_are_counted_per_shard_and_a_take_over_as_in_use() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder in this binary");

    let kinesis = Arc::new(MemoryKinesis::with_seed(4));
    kinesis.create_stream("s", 2);
    let worker = Worker::builder()
        .kinesis(kinesis.clone())
        .lease_store(Arc::new(MemoryLeaseStore::new()))
        .stream("s")
        .processor_factory(|_: &str| -> Box<dyn RecordProcessor> {
            Box::new(common::Checkpointing)
        })
        .config(common::quick_config().enhanced_fan_out("app"))
        .build()
        .unwrap();
    let stop = worker.shutdown_handle();
    let task = tokio::spawn(worker.run());

    // Started at about 0 s, then again as each ends at 5 and 10 minutes.
    tokio::time::sleep(Duration::from_secs(11 * 60)).await;
    let counts = counters(&snapshotter);
    let calls = of(&counts, "SubscribeToShard.Calls", "shard");
    let both = |n| {
        BTreeMap::from([
            ("shardId-000000000000".to_owned(), n),
            ("shardId-000000000001".to_owned(), n),
        ])
    };
    assert_eq!(calls, both(3));
    assert_eq!(
        of(&counts, "SubscribeToShard.Failures", "kind"),
        BTreeMap::new()
    );

    // Another subscription to shard 0 for the same consumer takes over after 5 s (as a
    // restarted worker's would): the worker's breaks as in use, and it subscribes again.
    let arn = kinesis
        .describe_stream_summary(&StreamRef::new("s"))
        .await
        .unwrap()
        .arn;
    let consumer = kinesis.describe_stream_consumer(&arn, "app").await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let intruder = kinesis
        .subscribe_to_shard(
            &consumer.arn,
            "shardId-000000000000",
            &IteratorStart::Latest,
        )
        .await
        .unwrap();
    drop(intruder);
    tokio::time::sleep(Duration::from_secs(30)).await;
    let counts = counters(&snapshotter);
    let failures = of(&counts, "SubscribeToShard.Failures", "kind");
    assert!(
        failures.get("in_use").is_some_and(|n| *n >= 1) && failures.len() == 1,
        "{failures:?}"
    );
    let calls = of(&counts, "SubscribeToShard.Calls", "shard");
    assert!(
        calls.get("shardId-000000000000").is_some_and(|n| *n >= 1),
        "subscribed again: {calls:?}"
    );
    stop.shutdown();
    task.await.unwrap().unwrap();
}
