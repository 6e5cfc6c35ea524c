//! Read-ahead for one shard: a fetcher task keeps calling GetRecords while the processor works,
//! bounded in records and in bytes (it waits for capacity before handing over the next batch, and
//! a batch's capacity returns when the processor is done with it).
//!
//! The fetcher owns the shard iterator: it refreshes an expired one after the last record it
//! fetched, backs off (jittered, growing) on throttled and transient failures, pauses when caught
//! up, and stops at the shard's end or at a fatal failure, which it hands to the consumer.

use std::sync::Arc;
use std::time::Duration;

use kinesis_api::{ChildShard, IteratorStart, Kinesis, Record, StreamRef};
use kinesis_retry::{AwsError, Backoff, BackoffConfig, Class};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;

use crate::jitter::Jitter;
use crate::retrieval::{Fetched, get_records, shard_iterator};

/// At most this many GetRecords answers wait for the processor, whatever their size.
const MAX_BATCHES_AHEAD: usize = 64;

/// The first GetRecords call on a shard asks for at most this many records, and each full page
/// multiplies the next call's limit by [`LIMIT_GROWTH`] up to the configured maximum: a backlog's
/// first page is small, so the processor has records while the larger pages are still coming
/// (one 10,000-record page of aggregates can be 10 MiB, which takes seconds to arrive).
const FIRST_LIMIT: i32 = 10;
const LIMIT_GROWTH: i32 = 10;

/// How far a fetcher may read ahead.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PrefetchLimits {
    pub(crate) max_records: usize,
    pub(crate) max_bytes: usize,
    pub(crate) records_per_call: i32,
    pub(crate) idle_time: Duration,
}

/// One GetRecords answer, holding its share of the read-ahead capacity until dropped.
#[derive(Debug)]
pub(crate) struct Prefetched {
    pub(crate) records: Vec<Record>,
    pub(crate) millis_behind_latest: Option<i64>,
    /// `Some` at the shard's end: the children GetRecords announced.
    pub(crate) end: Option<Vec<ChildShard>>,
    _records: Option<OwnedSemaphorePermit>,
    _bytes: Option<OwnedSemaphorePermit>,
}

/// The receiving end; dropping it stops the fetcher.
#[derive(Debug)]
pub(crate) struct Prefetcher {
    batches: mpsc::Receiver<Result<Prefetched, AwsError>>,
    task: JoinHandle<()>,
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The read-ahead bound of one shard: a batch holds its share until the processor is done.
pub(crate) struct Capacity {
    records: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    limits: PrefetchLimits,
}

impl Capacity {
    pub(crate) fn new(limits: &PrefetchLimits) -> Self {
        Capacity {
            records: Arc::new(Semaphore::new(limits.max_records.max(1))),
            bytes: Arc::new(Semaphore::new(limits.max_bytes.max(1))),
            limits: *limits,
        }
    }

    /// A batch of `records`, once there is room for it: the processor is behind by at most the
    /// limits.
    pub(crate) async fn batch(
        &self,
        records: Vec<Record>,
        millis_behind_latest: Option<i64>,
        end: Option<Vec<ChildShard>>,
    ) -> Prefetched {
        let count = records.len().min(self.limits.max_records).max(1);
        let bytes: usize = records.iter().map(|r| r.data.len()).sum();
        let bytes = bytes.clamp(1, self.limits.max_bytes);
        let records_permit = self
            .records
            .clone()
            .acquire_many_owned(u32::try_from(count).unwrap_or(u32::MAX))
            .await
            .ok();
        let bytes_permit = self
            .bytes
            .clone()
            .acquire_many_owned(u32::try_from(bytes).unwrap_or(u32::MAX))
            .await
            .ok();
        Prefetched {
            records,
            millis_behind_latest,
            end,
            _records: records_permit,
            _bytes: bytes_permit,
        }
    }
}

impl Prefetcher {
    /// Starts reading `shard_id` through enhanced fan-out: subscriptions of `consumer_arn` from
    /// `start`, renewed as each ends.
    pub(crate) fn start_fan_out(
        source: crate::fan_out::Source,
        shard_id: String,
        start: IteratorStart,
        limits: PrefetchLimits,
        jitter: Arc<Jitter>,
    ) -> Prefetcher {
        let (tx, batches) = mpsc::channel(MAX_BATCHES_AHEAD);
        let task = tokio::spawn(crate::fan_out::fetch(
            source, shard_id, start, limits, jitter, tx,
        ));
        Prefetcher { batches, task }
    }

    /// Starts reading `shard_id` from `iterator`.
    pub(crate) fn start(
        kinesis: Arc<dyn Kinesis>,
        stream: StreamRef,
        shard_id: String,
        iterator: String,
        limits: PrefetchLimits,
        jitter: Arc<Jitter>,
    ) -> Prefetcher {
        // Room for many batches: the record and byte limits are what bound the read-ahead.
        let (tx, batches) = mpsc::channel(MAX_BATCHES_AHEAD);
        let task = tokio::spawn(fetch(
            kinesis, stream, shard_id, iterator, limits, jitter, tx,
        ));
        Prefetcher { batches, task }
    }

    /// The next batch, or the fatal failure that stopped the fetcher; `None` when it has stopped
    /// (after the shard's end batch, or when an iterator expired before any record was read).
    pub(crate) async fn next(&mut self) -> Option<Result<Prefetched, AwsError>> {
        self.batches.recv().await
    }
}

async fn fetch(
    kinesis: Arc<dyn Kinesis>,
    stream: StreamRef,
    shard_id: String,
    mut iterator: String,
    limits: PrefetchLimits,
    jitter: Arc<Jitter>,
    tx: mpsc::Sender<Result<Prefetched, AwsError>>,
) {
    let capacity = Capacity::new(&limits);
    let mut last_fetched: Option<String> = None;
    let base = limits.idle_time.max(Duration::from_millis(100));
    let mut backoff = Backoff::new(
        BackoffConfig::new(base, base.max(Duration::from_secs(10))).expect("base > 0"),
    );
    let mut rng = jitter.rng();
    let mut limit = FIRST_LIMIT.min(limits.records_per_call);
    loop {
        let asked = tokio::time::Instant::now();
        let fetched = get_records(&*kinesis, &iterator, limit).await;
        let failed = match &fetched {
            Fetched::Failed(e) => Some(e.class() == Class::Throttled),
            _ => None,
        };
        crate::kcl_metrics::get_records(stream.as_str(), &shard_id, asked.elapsed(), failed);
        match fetched {
            Fetched::Batch {
                records,
                next,
                millis_behind_latest,
                children,
            } => {
                backoff.reset();
                if records.len() >= usize::try_from(limit).unwrap_or(0) {
                    limit = limit
                        .saturating_mul(LIMIT_GROWTH)
                        .min(limits.records_per_call);
                }
                if let Some(last) = records.last() {
                    last_fetched = Some(last.sequence_number.clone());
                }
                let caught_up = records.is_empty() || millis_behind_latest == Some(0);
                let end = next.is_none().then_some(children);
                let batch = capacity.batch(records, millis_behind_latest, end).await;
                if tx.send(Ok(batch)).await.is_err() {
                    return;
                }
                match next {
                    None => return,
                    Some(next) => iterator = next,
                }
                if caught_up {
                    tokio::time::sleep(limits.idle_time).await;
                }
            }
            Fetched::Expired => {
                let start = match &last_fetched {
                    Some(seq) => IteratorStart::AfterSequence(seq.clone()),
                    None => {
                        tracing::warn!(shard = %shard_id, "iterator expired before any record was read; the consumer restarts the shard");
                        return;
                    }
                };
                match shard_iterator(&*kinesis, &stream, &shard_id, &start, &jitter).await {
                    Ok(it) => iterator = it,
                    Err(e) if e.class() == Class::Fatal => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(shard = %shard_id, error = %e, "refreshing an expired iterator failed; retrying");
                        tokio::time::sleep(backoff.next_delay(&mut rng)).await;
                    }
                }
            }
            Fetched::Failed(e) => match e.class() {
                Class::Fatal => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
                Class::Throttled => {
                    tracing::debug!(shard = %shard_id, error = %e, "GetRecords throttled; backing off");
                    tokio::time::sleep(backoff.next_delay(&mut rng)).await;
                }
                Class::Transient => {
                    tracing::warn!(shard = %shard_id, error = %e, "GetRecords failed; retrying");
                    tokio::time::sleep(backoff.next_delay(&mut rng)).await;
                }
            },
        }
    }
}

#[cfg(test)]
#[path = "prefetch_tests.rs"]
mod tests;
