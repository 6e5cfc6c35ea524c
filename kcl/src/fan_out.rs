//! Enhanced fan-out retrieval: the stream consumer this application registers (or finds), and
//! the per-shard fetcher that keeps a subscription open and hands its events to the processor
//! as the polling fetcher hands its pages.
//!
//! A subscription lasts up to five minutes; the fetcher subscribes again from the last event's
//! continuation, at most once a second per shard (Kinesis' limit). `ResourceInUseException`
//! (another subscription to the shard still open, such as one abandoned by a restart) and
//! throttled or transient failures back off with jitter and subscribe again; a fatal failure goes
//! to the consumer. The shard's end is the event without a continuation, with the children.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kinesis_api::{ConsumerStatus, IteratorStart, Kinesis, StreamConsumer, StreamRef};
use kinesis_retry::{AwsError, Backoff, BackoffConfig, Class};
use tokio::sync::mpsc;

use crate::jitter::Jitter;
use crate::prefetch::{Capacity, PrefetchLimits, Prefetched};

/// Kinesis takes at most one SubscribeToShard per consumer and shard a second.
const SUBSCRIBE_INTERVAL: Duration = Duration::from_secs(1);
/// How often registration is checked until the consumer is ACTIVE.
const ACTIVE_POLL: Duration = Duration::from_secs(1);
/// How often a subscription to a closed shard that only sends empty events checks, with one
/// GetRecords call, whether the shard was read to its end.
const END_CHECK: Duration = Duration::from_secs(2);

/// The shards the last shard sync found closed (shared by the worker's consumers). Kinesis ends
/// a closed shard's subscription with an event naming the children; an endpoint that does not
/// (kinesis-mock sends empty events forever) is caught by a GetRecords check on these shards
/// only.
#[derive(Debug, Default)]
pub(crate) struct ClosedShards(Mutex<HashSet<String>>);

impl ClosedShards {
    pub(crate) fn set(&self, closed: impl IntoIterator<Item = String>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = closed.into_iter().collect();
    }

    fn contains(&self, shard: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(shard)
    }
}

/// Where the fan-out fetcher of a shard reads from.
pub(crate) struct Source {
    pub(crate) kinesis: Arc<dyn Kinesis>,
    pub(crate) stream: StreamRef,
    pub(crate) consumer_arn: Arc<str>,
    pub(crate) closed: Arc<ClosedShards>,
}

/// Whether the shard was read to its end after `start`: its children if so.
async fn read_to_end(
    source: &Source,
    shard_id: &str,
    start: &IteratorStart,
) -> Option<Vec<kinesis_api::ChildShard>> {
    let iterator = source
        .kinesis
        .get_shard_iterator(&source.stream, shard_id, start)
        .await
        .ok()?;
    let page = source.kinesis.get_records(&iterator, 1).await.ok()?;
    (page.records.is_empty() && page.next_iterator.is_none()).then_some(page.child_shards)
}

/// The consumer named `name` on the stream, registered if it does not exist, once it is ACTIVE.
/// One step of start-up: the caller retries failures by class.
pub(crate) async fn ensure_consumer(
    kinesis: &dyn Kinesis,
    stream_arn: &str,
    name: &str,
) -> Result<StreamConsumer, AwsError> {
    let mut consumer = match kinesis.describe_stream_consumer(stream_arn, name).await {
        Ok(c) => c,
        Err(e) if e.is_not_found() => {
            match kinesis.register_stream_consumer(stream_arn, name).await {
                Ok(c) => {
                    tracing::info!(consumer = %c.arn, "registered the enhanced fan-out consumer");
                    c
                }
                // Another worker registered it meanwhile.
                Err(e) if e.is_code("ResourceInUseException") => {
                    kinesis.describe_stream_consumer(stream_arn, name).await?
                }
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    };
    while consumer.status != ConsumerStatus::Active {
        tracing::info!(consumer = %consumer.arn, status = ?consumer.status, "waiting until the enhanced fan-out consumer is ACTIVE");
        tokio::time::sleep(ACTIVE_POLL).await;
        consumer = kinesis.describe_stream_consumer(stream_arn, name).await?;
    }
    Ok(consumer)
}

/// Keeps `shard_id` subscribed from `start` and hands each event with records (and the shard's
/// end) over `tx`, until the end, a fatal failure, or the receiver is dropped.
pub(crate) async fn fetch(
    source: Source,
    shard_id: String,
    mut start: IteratorStart,
    limits: PrefetchLimits,
    jitter: Arc<Jitter>,
    tx: mpsc::Sender<Result<Prefetched, AwsError>>,
) {
    let capacity = Capacity::new(&limits);
    let mut backoff = Backoff::new(
        BackoffConfig::new(SUBSCRIBE_INTERVAL, Duration::from_secs(10)).expect("base > 0"),
    );
    let mut rng = jitter.rng();
    let mut last_subscribe: Option<tokio::time::Instant> = None;
    let mut last_end_check = tokio::time::Instant::now();
    let kinesis = &source.kinesis;
    let consumer_arn = &source.consumer_arn;
    loop {
        if let Some(at) = last_subscribe {
            tokio::time::sleep_until(at + SUBSCRIBE_INTERVAL).await;
        }
        last_subscribe = Some(tokio::time::Instant::now());
        crate::kcl_metrics::subscribed(source.stream.as_str(), &shard_id);
        let failure = match kinesis
            .subscribe_to_shard(consumer_arn, &shard_id, &start)
            .await
        {
            Err(e) => Some(e),
            Ok(mut subscription) => loop {
                let event = match subscription.next_event().await {
                    // Ended (after about five minutes): subscribe again from the continuation.
                    None => break None,
                    Some(Err(e)) => break Some(e),
                    Some(Ok(event)) => event,
                };
                backoff.reset();
                let end = event.is_shard_end();
                if let Some(next) = &event.continuation_sequence_number {
                    start = IteratorStart::AfterSequence(next.clone());
                }
                if event.records.is_empty() && !end {
                    if source.closed.contains(&shard_id) && last_end_check.elapsed() >= END_CHECK {
                        last_end_check = tokio::time::Instant::now();
                        if let Some(children) = read_to_end(&source, &shard_id, &start).await {
                            tracing::debug!(shard = %shard_id, "the closed shard was read to its end (found by GetRecords: the subscription did not say)");
                            let batch = capacity.batch(Vec::new(), Some(0), Some(children)).await;
                            let _ = tx.send(Ok(batch)).await;
                            return;
                        }
                    }
                    continue;
                }
                let batch = capacity
                    .batch(
                        event.records,
                        event.millis_behind_latest,
                        end.then_some(event.child_shards),
                    )
                    .await;
                if tx.send(Ok(batch)).await.is_err() || end {
                    return;
                }
            },
        };
        let Some(failure) = failure else {
            continue;
        };
        // Another subscription to the shard is still open (one a previous owner or a restart left
        // behind): Kinesis lets a new one take over 5 s after it started.
        let in_use = failure.is_code("ResourceInUseException");
        let class = failure.class();
        let kind = match class {
            _ if in_use => "in_use",
            Class::Throttled => "throttled",
            Class::Transient => "transient",
            Class::Fatal => "fatal",
        };
        crate::kcl_metrics::subscription_failed(source.stream.as_str(), &shard_id, kind);
        match class {
            Class::Fatal if !in_use => {
                let _ = tx.send(Err(failure)).await;
                return;
            }
            class => {
                let delay = backoff.next_delay(&mut rng);
                if in_use || class == Class::Throttled {
                    tracing::debug!(shard = %shard_id, error = %failure, retry_in = ?delay, "subscription refused for now; subscribing again");
                } else {
                    tracing::warn!(shard = %shard_id, error = %failure, retry_in = ?delay, "subscription failed; subscribing again");
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
}
