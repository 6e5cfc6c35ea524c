//! Throttling shows per shard in the metrics: refused records count under `ErrorsByCode` with
//! their shard, and `ShardRateLimitPercent` shows the shard's lowered rate. (A recorder is global
//! to the process, so this test has its own test binary.)

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{stream_with_limits, warmed_up};
use kinesis_api::memory::ShardLimits;
use kpl::{ProducerConfig, UserRecord};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

#[tokio::test(start_paused = true)]
async fn throttled_records_are_counted_by_shard_and_the_shards_rate_is_a_gauge() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder in this binary");
    // 20 KB per second, far below the 1.5 MiB the producer assumes at first.
    let kinesis = stream_with_limits(
        1,
        ShardLimits {
            write_bytes: 20_000.0,
            ..ShardLimits::default()
        },
    );
    let producer = warmed_up(&kinesis, ProducerConfig::default()).await;
    let mut pending = Vec::new();
    for i in 0..1_000 {
        let r = UserRecord::new("s", format!("k{i}"), Bytes::from(vec![b'x'; 100]));
        pending.push(producer.put(r).await.unwrap());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let snapshot = snapshotter.snapshot().into_vec();
    let labels = |key: &metrics_util::CompositeKey| -> Vec<(String, String)> {
        key.key()
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect()
    };
    let shard = ("shard".to_owned(), "shardId-000000000000".to_owned());
    let throttled_on_shard = snapshot.iter().any(|(key, _, _, value)| {
        key.key().name() == "ErrorsByCode"
            && labels(key).contains(&shard)
            && matches!(value, DebugValue::Counter(n) if *n > 0)
    });
    let names: Vec<_> = snapshot.iter().map(|(key, ..)| key.key().clone()).collect();
    assert!(throttled_on_shard, "ErrorsByCode by shard: {names:?}");
    let rate = snapshot.iter().find_map(|(key, _, _, value)| match value {
        DebugValue::Gauge(v) if key.key().name() == "ShardRateLimitPercent" => {
            labels(key).contains(&shard).then(|| v.into_inner())
        }
        _ => None,
    });
    assert!(
        rate.is_some_and(|r| r < 150.0),
        "the shard's lowered rate: {rate:?}"
    );
    for p in pending {
        p.await.unwrap();
    }
    producer.shutdown().await;
}
