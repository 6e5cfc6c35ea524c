//! `WorkerBuilder::build_stream`: every shard's batches through one `futures::Stream`, on the
//! in-memory Kinesis and lease store under tokio's paused clock: every record once, each key in
//! put order across a split (the parent's end comes through the stream and is checkpointed), and
//! a shutdown while nobody takes batches does not hang.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

mod common;

use common::{put_numbered, quick_config, split_in_half};
use futures_core::Stream;
use kcl::leases::MemoryLeaseStore;
use kcl::{Batch, RecordStream, Worker};
use kinesis_api::memory::MemoryKinesis;

const PAUSE: Duration = Duration::from_millis(2);

/// The next batch through the `Stream` trait, or `None` after a simulated minute.
async fn next(stream: &mut RecordStream) -> Option<Batch> {
    let polled = std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx));
    tokio::time::timeout(Duration::from_secs(60), polled)
        .await
        .ok()
        .flatten()
}

fn worker(kinesis: Arc<MemoryKinesis>) -> (Worker, RecordStream) {
    Worker::builder()
        .kinesis(kinesis)
        .lease_store(Arc::new(MemoryLeaseStore::new()))
        .stream("s")
        .config(quick_config())
        .build_stream(4)
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn every_record_once_in_key_order_across_a_split() {
    let kinesis = Arc::new(MemoryKinesis::with_seed(4));
    kinesis.create_stream("s", 2);
    let (worker, mut stream) = worker(kinesis.clone());
    let handle = worker.shutdown_handle();
    let running = tokio::spawn(worker.run());

    put_numbered(&kinesis, 0, 400, 50, PAUSE).await;
    let parent = split_in_half(&kinesis, 0).await;
    put_numbered(&kinesis, 400, 400, 50, PAUSE).await;

    let mut delivered: Vec<(String, usize)> = Vec::new();
    let mut ended = Vec::new();
    while delivered.len() < 800 {
        let mut batch = next(&mut stream)
            .await
            .unwrap_or_else(|| panic!("stalled after {} records", delivered.len()));
        if batch.shard_ended {
            assert!(batch.records.is_empty());
            ended.push(batch.shard_id.clone());
        }
        for r in &batch.records {
            let i = String::from_utf8_lossy(&r.data).parse().unwrap();
            delivered.push((r.partition_key.to_string(), i));
        }
        batch.checkpoint().await.unwrap();
    }
    assert_eq!(
        ended,
        std::slice::from_ref(&parent.id),
        "the split parent's end came through"
    );
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (key, i) in &delivered {
        if let Some(prev) = last.insert(key, *i) {
            assert!(
                prev < *i,
                "{key}: {i} after {prev} (parents before children)"
            );
        }
    }
    let mut all: Vec<usize> = delivered.iter().map(|(_, i)| *i).collect();
    all.sort_unstable();
    assert_eq!(all, (0..800).collect::<Vec<_>>(), "every record, once");

    handle.shutdown();
    running.await.unwrap().unwrap();
    assert!(
        next(&mut stream).await.is_none(),
        "the stream ends with the worker"
    );
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_while_nobody_takes_batches_does_not_hang() {
    let kinesis = Arc::new(MemoryKinesis::with_seed(5));
    kinesis.create_stream("s", 2);
    put_numbered(&kinesis, 0, 400, 50, PAUSE).await;
    let (worker, stream) = worker(kinesis.clone());
    let handle = worker.shutdown_handle();
    let running = tokio::spawn(worker.run());
    // The stream is kept but never read: its 4 places fill and the shards wait to send.
    tokio::time::sleep(Duration::from_secs(5)).await;
    handle.shutdown();
    tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("the worker stops")
        .unwrap()
        .unwrap();
    drop(stream);
}
