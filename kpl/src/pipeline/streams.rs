//! The streams a producer writes to, each with its shard map. A stream's map is loaded by the
//! first `put` for it (so an unknown stream is refused before anything is enqueued), read by the
//! dispatcher for every record, and replaced by refresh tasks. Each entry also knows the
//! stream's maximum record size (where the endpoint reports it) and whether the stream was found
//! deleted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use kinesis_retry::{Backoff, BackoffConfig, Class};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::pending::StreamId;
use super::retry::classify_call;
use super::shard_map::ShardMap;
use crate::config::DEFAULT_RECORD_LIMIT;
use crate::error::SubmitErrorKind;
use crate::kinesis::{CallError, KinesisApi};

/// The first listing's back-off: from 200 ms, capped at 2 s, full jitter.
const FIRST_LOAD_BACKOFF: (Duration, Duration) =
    (Duration::from_millis(200), Duration::from_secs(2));
/// A stream found deleted is listed again (to see it re-created) at most this often; `put`s in
/// between are refused at once.
const DELETED_RECHECK: Duration = Duration::from_secs(10);
/// A stream's maximum record size is read again at most this often (when a record above the
/// known one is put).
const LIMIT_REREAD: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub(crate) struct StreamEntry {
    pub(crate) id: StreamId,
    map: RwLock<Arc<ShardMap>>,
    loaded: OnceCell<()>,
    /// A refresh task is running.
    pub(crate) refreshing: AtomicBool,
    /// The stream's maximum record size in bytes; 0 when the endpoint does not report it.
    record_limit: AtomicUsize,
    /// When `record_limit` was last read.
    limit_read: Mutex<Option<Instant>>,
    /// A call said the stream does not exist (since then, `put` refuses its records).
    deleted: AtomicBool,
    /// When the stream was last found missing.
    deleted_seen: Mutex<Option<Instant>>,
}

impl StreamEntry {
    pub(crate) fn new(id: StreamId) -> Self {
        StreamEntry {
            id,
            map: RwLock::new(Arc::new(ShardMap::default())),
            loaded: OnceCell::new(),
            refreshing: AtomicBool::new(false),
            record_limit: AtomicUsize::new(0),
            limit_read: Mutex::new(None),
            deleted: AtomicBool::new(false),
            deleted_seen: Mutex::new(None),
        }
    }

    /// Marks the stream as deleted: `put` refuses its records until a listing finds it again.
    pub(crate) fn mark_deleted(&self) {
        if !self.deleted.swap(true, Ordering::AcqRel) {
            tracing::warn!(stream = %self.id, "the stream does not exist (deleted?): puts for it are refused until it is found again");
        }
        *self.deleted_seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    /// The stream's reported maximum record size, if any.
    fn reported_limit(&self) -> Option<usize> {
        Some(self.record_limit.load(Ordering::Acquire)).filter(|l| *l > 0)
    }

    /// Reads the stream's maximum record size; a failure keeps what was known (and is logged).
    async fn read_limit(&self, api: &dyn KinesisApi) {
        *self.limit_read.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        match api.max_record_size(&self.id).await {
            Ok(limit) => self
                .record_limit
                .store(limit.unwrap_or(0), Ordering::Release),
            Err(e) => {
                tracing::debug!(stream = %self.id, code = e.code(), message = %e.message(), "DescribeStreamSummary failed: the stream's maximum record size stays {}", self.reported_limit().map_or("unknown (1 MiB assumed)".to_owned(), |l| format!("{l} bytes")))
            }
        }
    }

    /// The current shard map.
    pub(crate) fn map(&self) -> Arc<ShardMap> {
        self.map.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn set_map(&self, map: ShardMap) {
        *self.map.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(map);
    }
}

#[derive(Debug, Default)]
pub(crate) struct Streams {
    entries: RwLock<HashMap<StreamId, Arc<StreamEntry>>>,
    /// The first stream loaded: most producers write one stream, and checking it is a plain
    /// read, where the table takes a shared lock (two atomic writes on a line all callers share).
    first: OnceLock<Arc<StreamEntry>>,
}

impl Streams {
    /// Makes sure the stream's shard map is loaded, listing its shards if this is its first use
    /// (transient failures are retried for up to `patience`). Once loaded this is a shared read
    /// of the table: no lock is contended and nothing is cloned. A stream found deleted is
    /// refused at once, and listed again at most every 10 s to see it re-created.
    pub(crate) async fn ensure_loaded(
        &self,
        stream: &StreamId,
        api: &dyn KinesisApi,
        patience: Duration,
    ) -> Result<(), SubmitErrorKind> {
        if self.is_loaded(stream) {
            return Ok(());
        }
        let entry = {
            let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
            entries
                .entry(stream.clone())
                .or_insert_with(|| Arc::new(StreamEntry::new(stream.clone())))
                .clone()
        };
        entry
            .loaded
            .get_or_try_init(|| async {
                let shards = first_listing(stream, api, patience).await?;
                entry.set_map(ShardMap::new(shards, None));
                entry.read_limit(api).await;
                Ok::<(), SubmitErrorKind>(())
            })
            .await?;
        if entry.is_deleted() {
            recheck_deleted(&entry, api).await?;
        }
        let _ = self.first.set(entry);
        Ok(())
    }

    /// Whether the stream's shard map is loaded and the stream not found deleted (so
    /// `ensure_loaded` would return at once).
    pub(crate) fn is_loaded(&self, stream: &StreamId) -> bool {
        if let Some(first) = self.first.get()
            && (Arc::ptr_eq(&first.id, stream) || first.id == *stream)
        {
            return !first.is_deleted();
        }
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries
            .get(&**stream)
            .is_some_and(|entry| entry.loaded.initialized() && !entry.is_deleted())
    }

    /// The largest record the stream takes, in bytes, given the user's cap: the stream's
    /// reported limit (read again, at most once a minute, when `size` is above it) under the
    /// cap; where the stream reports none, the cap, or 1 MiB.
    pub(crate) async fn record_limit(
        &self,
        stream: &StreamId,
        api: &dyn KinesisApi,
        cap: Option<usize>,
        size: usize,
    ) -> usize {
        let Some(entry) = self.get(stream) else {
            return cap.unwrap_or(DEFAULT_RECORD_LIMIT);
        };
        let limit = |entry: &StreamEntry| match (entry.reported_limit(), cap) {
            (Some(reported), cap) => reported.min(cap.unwrap_or(usize::MAX)),
            (None, Some(cap)) => cap,
            (None, None) => DEFAULT_RECORD_LIMIT,
        };
        if size > limit(&entry) && cap.is_none_or(|cap| size <= cap) {
            let stale = entry
                .limit_read
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_none_or(|at| at.elapsed() >= LIMIT_REREAD);
            if stale {
                entry.read_limit(api).await;
            }
        }
        limit(&entry)
    }

    /// The entry of a stream `ensure_loaded` has seen.
    pub(crate) fn get(&self, stream: &str) -> Option<Arc<StreamEntry>> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries.get(stream).cloned()
    }

    /// Every stream in use, for scheduled refreshes.
    pub(crate) fn all(&self) -> Vec<Arc<StreamEntry>> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries
            .values()
            .filter(|e| e.loaded.initialized())
            .cloned()
            .collect()
    }
}

/// Lists a stream's shards for its first use: a stream that does not exist (or a failure that
/// will not pass) is refused at once; transient failures and throttling are retried with
/// jittered back-off for up to `patience`.
async fn first_listing(
    stream: &StreamId,
    api: &dyn KinesisApi,
    patience: Duration,
) -> Result<Vec<crate::kinesis::ShardInfo>, SubmitErrorKind> {
    let started = Instant::now();
    let (base, max) = FIRST_LOAD_BACKOFF;
    let mut backoff = Backoff::new(BackoffConfig::new(base, max).expect("valid constants"));
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let last = match api.list_shards(stream, true).await {
            Ok(shards) if !shards.is_empty() => return Ok(shards),
            Ok(_) => "the stream has no open shards".to_owned(),
            Err(CallError::Service { code, .. }) if code == "ResourceNotFoundException" => {
                return Err(SubmitErrorKind::StreamNotFound {
                    stream: stream.to_string(),
                });
            }
            Err(e) => {
                let message = format!("{}: {}", e.code(), e.message());
                if classify_call(&e) == Class::Fatal {
                    return Err(shard_map_error(stream, attempts, started, message));
                }
                message
            }
        };
        let delay = backoff.next_delay(&mut rand::rng());
        if started.elapsed() + delay >= patience {
            return Err(shard_map_error(stream, attempts, started, last));
        }
        tracing::debug!(%stream, attempts, error = %last, "listing the shards failed; retrying");
        tokio::time::sleep(delay).await;
    }
}

fn shard_map_error(
    stream: &StreamId,
    attempts: u32,
    started: Instant,
    last: String,
) -> SubmitErrorKind {
    SubmitErrorKind::ShardMap {
        stream: stream.to_string(),
        message: format!(
            "{attempts} attempt(s) in {:.1} s, the last: {last}",
            started.elapsed().as_secs_f64()
        ),
    }
}

/// A stream found deleted: refused at once, unless the last sighting is old enough to list it
/// again (it may have been re-created).
async fn recheck_deleted(entry: &StreamEntry, api: &dyn KinesisApi) -> Result<(), SubmitErrorKind> {
    let not_found = || SubmitErrorKind::StreamNotFound {
        stream: entry.id.to_string(),
    };
    let recent = entry
        .deleted_seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .is_some_and(|at| at.elapsed() < DELETED_RECHECK);
    if recent {
        return Err(not_found());
    }
    match api.list_shards(&entry.id, true).await {
        Ok(shards) if !shards.is_empty() => {
            entry.set_map(ShardMap::new(shards, None));
            entry.deleted.store(false, Ordering::Release);
            entry.read_limit(api).await;
            tracing::info!(stream = %entry.id, "the stream exists again: puts for it are accepted");
            Ok(())
        }
        Err(CallError::Service { code, .. }) if code == "ResourceNotFoundException" => {
            entry.mark_deleted();
            Err(not_found())
        }
        Ok(_) => Err(not_found()),
        Err(e) => Err(SubmitErrorKind::ShardMap {
            stream: entry.id.to_string(),
            message: format!("{}: {}", e.code(), e.message()),
        }),
    }
}

/// Marks a refresh as started; false when one is already running.
pub(crate) fn begin_refresh(entry: &StreamEntry) -> bool {
    !entry.refreshing.swap(true, Ordering::AcqRel)
}

/// Marks a refresh as finished.
pub(crate) fn end_refresh(entry: &StreamEntry) {
    entry.refreshing.store(false, Ordering::Release);
}
