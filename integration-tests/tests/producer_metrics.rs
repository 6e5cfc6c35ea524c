//! The producer's metrics reach a `metrics` recorder under the Java KPL's names, labelled by
//! stream, with values that agree with what was put, with units and descriptions; the backlog
//! gauge `UserRecordsPending` falls back to 0 once everything resolved. (A recorder is global to the process, so
//! this test has its own test binary.)

use std::collections::HashMap;

use integration_tests::TestEnv;
use kpl::{Producer, ProducerConfig, UserRecord};
use metrics_util::MetricKind;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

#[tokio::test]
async fn kpl_metric_names_are_recorded_per_stream() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder in this test binary");

    let env = TestEnv::new().await;
    let stream = env.create_stream(2).await;
    let producer = Producer::new(&env.sdk_config, ProducerConfig::default()).expect("producer");
    let mut futures = Vec::new();
    for i in 0..1_000 {
        let record = UserRecord::new(stream.name.as_str(), format!("k{i}"), vec![7u8; 50]);
        futures.push(producer.put(record).await.expect("accepted"));
    }
    for f in futures {
        f.await.expect("stored");
    }
    let stats = producer.stats();
    // The backlog gauge is set once a second: it shows the records pending, then 0. (A snapshot
    // takes the counters' increments with it: every snapshot is kept for the checks below.)
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        seen.extend(snapshotter.snapshot().into_vec());
        let gauge = seen
            .iter()
            .rev()
            .find(|(key, ..)| key.key().name() == "UserRecordsPending");
        if let Some((_, unit, description, DebugValue::Gauge(v))) = gauge
            && v.into_inner() == 0.0
        {
            assert_eq!(*unit, Some(metrics::Unit::Count));
            assert!(
                description.is_some(),
                "UserRecordsPending has a description"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "UserRecordsPending never read 0: {gauge:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    producer.shutdown().await;

    let mut counters: HashMap<String, u64> = HashMap::new();
    let mut histograms: HashMap<String, usize> = HashMap::new();
    seen.extend(snapshotter.snapshot().into_vec());
    for (key, unit, description, value) in seen {
        assert!(
            unit.is_some() && description.is_some(),
            "{} has a unit and a description",
            key.key().name()
        );
        let labels: Vec<_> = key
            .key()
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        if !labels.contains(&("stream".to_owned(), stream.name.clone())) {
            continue;
        }
        let name = key.key().name().to_owned();
        match (key.kind(), value) {
            (MetricKind::Counter, DebugValue::Counter(n)) => {
                *counters.entry(name).or_default() += n
            }
            (MetricKind::Histogram, DebugValue::Histogram(v)) => {
                *histograms.entry(name).or_default() += v.len()
            }
            _ => {}
        }
    }
    assert_eq!(
        counters.get("UserRecordsReceived"),
        Some(&1_000),
        "{counters:?}"
    );
    assert_eq!(counters.get("UserRecordsPut"), Some(&1_000), "{counters:?}");
    assert_eq!(
        counters.get("UserRecordsDataPut"),
        Some(&50_000),
        "{counters:?}"
    );
    assert_eq!(
        counters.get("KinesisRecordsPut"),
        Some(&stats.kinesis_records_put),
        "{counters:?}"
    );
    for name in [
        "RequestTime",
        "KinesisRecordsPerPutRecordsRequest",
        "UserRecordsPerPutRecordsRequest",
        "UserRecordsPerKinesisRecord",
        "BufferingTime",
        "RetriesPerRecord",
    ] {
        assert!(
            histograms.get(name).is_some_and(|n| *n > 0),
            "{name} missing: {histograms:?}"
        );
    }
}
