//! Enhanced fan-out retrieval: the stream consumer this application registers (or finds), and
//! the per-shard fetcher that keeps a subscription open and hands its events to the processor
//! as the polling fetcher hands its pages.
//!
//! A subscription lasts up to five minutes; the fetcher subscribes again from the last event's
//! continuation, at most once a second per shard (Kinesis' limit). `ResourceInUseException`
//! (another subscription to the shard still open, such as one abandoned by a restart) and
//! throttled or transient failures back off with jitter and subscribe again; a fatal failure goes
//! to the consumer. The shard's end is the event without a continuation, with the children.

use std::sync::Arc;
use std::time::Duration;

use kinesis_api::{ConsumerStatus, IteratorStart, Kinesis, StreamConsumer};
use kinesis_retry::{AwsError, Backoff, BackoffConfig, Class};
use tokio::sync::mpsc;

use crate::jitter::Jitter;
use crate::prefetch::{Capacity, PrefetchLimits, Prefetched};

/// Kinesis takes at most one SubscribeToShard per consumer and shard a second.
const SUBSCRIBE_INTERVAL: Duration = Duration::from_secs(1);
/// How often registration is checked until the consumer is ACTIVE.
const ACTIVE_POLL: Duration = Duration::from_secs(1);

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
    kinesis: Arc<dyn Kinesis>,
    consumer_arn: Arc<str>,
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
    loop {
        if let Some(at) = last_subscribe {
            tokio::time::sleep_until(at + SUBSCRIBE_INTERVAL).await;
        }
        last_subscribe = Some(tokio::time::Instant::now());
        let failure = match kinesis
            .subscribe_to_shard(&consumer_arn, &shard_id, &start)
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
        match failure.class() {
            Class::Fatal => {
                let _ = tx.send(Err(failure)).await;
                return;
            }
            class => {
                let delay = backoff.next_delay(&mut rng);
                if failure.is_code("ResourceInUseException") || class == Class::Throttled {
                    tracing::debug!(shard = %shard_id, error = %failure, retry_in = ?delay, "subscription refused for now; subscribing again");
                } else {
                    tracing::warn!(shard = %shard_id, error = %failure, retry_in = ?delay, "subscription failed; subscribing again");
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
}
