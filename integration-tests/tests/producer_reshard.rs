//! Splitting a shard while producing: nothing is lost, no user record is delivered from a shard
//! whose range excludes it, and the producer's shard map refresh shows in its stats.
//!
//! An aggregate built from the map before the split can land on a child that owns only some of
//! its user records. Those bytes are stored and cannot be taken back; the Java KCL drops such an
//! aggregate whole, so the producer re-sends every record of it to its owner.

use std::time::Duration;

use integration_tests::TestEnv;
use integration_tests::check::{Put, verify_stream};
use kpl::{Producer, ProducerConfig, UserRecord};
use rand::Rng;

type Pending = (String, bytes::Bytes, kpl::PutFuture);

async fn put_batch(
    producer: &Producer,
    stream: &str,
    futures: &mut Vec<Pending>,
    from: usize,
    n: usize,
) {
    for i in from..from + n {
        let mut data = vec![0u8; 300];
        rand::rng().fill(&mut data[..]);
        let r = UserRecord::new(stream, format!("key-{i}"), data);
        let (pk, d) = (r.partition_key().to_owned(), r.data().clone());
        futures.push((pk, d, producer.put(r).await.expect("accepted")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splitting_a_shard_while_producing_loses_nothing_and_misplaces_nothing() {
    let env = TestEnv::new().await;
    let stream = env.create_stream(2).await;
    let config = ProducerConfig::default()
        .max_concurrent_requests(2)
        .request_timeout(Duration::from_secs(30))
        .record_ttl(Duration::from_secs(300))
        .record_max_buffered_time(Duration::from_millis(20));
    let producer = Producer::new(&env.sdk_config, config).expect("producer");

    let shards = stream.open_shards().await;
    let parent = shards[0].clone();

    let mut futures = Vec::new();
    put_batch(&producer, &stream.name, &mut futures, 0, 3_000).await;
    stream.split_in_half(&parent).await;
    // Keep producing while the split happens, and after it is done.
    put_batch(&producer, &stream.name, &mut futures, 3_000, 3_000).await;
    env.wait_stream_active(&stream.name).await;
    put_batch(&producer, &stream.name, &mut futures, 6_000, 6_000).await;

    let mut puts = Vec::new();
    for (partition_key, data, f) in futures {
        let outcome = f.await.unwrap_or_else(|e| panic!("record lost: {e}"));
        puts.push(Put {
            partition_key,
            data,
            outcome,
        });
    }
    let stats = producer.stats();
    eprintln!("after the split: {stats:?}");
    producer.shutdown().await;

    assert_eq!(stream.open_shards().await.len(), 3, "the split happened");
    assert!(
        stats.wrong_shard > 0,
        "records predicted for the closed parent landed on its children"
    );
    assert!(
        stats.shard_map_refreshes > 0,
        "the producer refreshed its shard map"
    );
    let children: Vec<String> = stream
        .open_shards()
        .await
        .iter()
        .filter(|s| s.parent_shard_id() == Some(parent.shard_id()))
        .map(|s| s.shard_id().to_owned())
        .collect();
    assert_eq!(children.len(), 2);
    assert!(
        puts.iter()
            .any(|p| children.iter().any(|c| c == p.outcome.shard_id())),
        "records after the split went to the children"
    );
    // As the Java KCL reads it: exactly once each, every user record inside its shard's range.
    // Each record of an aggregate that landed on the wrong child matches one re-send.
    let read = verify_stream(&stream, &puts).await;
    assert_eq!(read.delivered, puts.len());
    assert_eq!(read.filtered as u64, stats.wrong_shard_resent);
}
