//! The streams a producer writes to, each with its shard map. A stream's map is loaded by the
//! first `put` for it (so an unknown stream is refused before anything is enqueued), read by the
//! dispatcher for every record, and replaced by refresh tasks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use tokio::sync::OnceCell;

use super::pending::StreamId;
use super::shard_map::ShardMap;
use crate::error::SubmitErrorKind;
use crate::kinesis::{CallError, KinesisApi};

/// Attempts at the first listing of a stream's shards before `put` gives up.
const FIRST_LOAD_ATTEMPTS: u32 = 3;

#[derive(Debug)]
pub(crate) struct StreamEntry {
    pub(crate) id: StreamId,
    map: RwLock<Arc<ShardMap>>,
    loaded: OnceCell<()>,
    /// A refresh task is running.
    pub(crate) refreshing: AtomicBool,
}

impl StreamEntry {
    pub(crate) fn new(id: StreamId) -> Self {
        StreamEntry {
            id,
            map: RwLock::new(Arc::new(ShardMap::default())),
            loaded: OnceCell::new(),
            refreshing: AtomicBool::new(false),
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
    /// Makes sure the stream's shard map is loaded, listing its shards if this is its first use.
    /// Once loaded this is a shared read of the table: no lock is contended and nothing is
    /// cloned.
    pub(crate) async fn ensure_loaded(
        &self,
        stream: &StreamId,
        api: &dyn KinesisApi,
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
                let shards = first_listing(stream, api).await?;
                entry.set_map(ShardMap::new(shards, None));
                Ok::<(), SubmitErrorKind>(())
            })
            .await?;
        let _ = self.first.set(entry);
        Ok(())
    }

    /// Whether the stream's shard map is loaded (so `ensure_loaded` would return at once).
    pub(crate) fn is_loaded(&self, stream: &StreamId) -> bool {
        if let Some(first) = self.first.get()
            && (Arc::ptr_eq(&first.id, stream) || first.id == *stream)
        {
            return true;
        }
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries
            .get(&**stream)
            .is_some_and(|entry| entry.loaded.initialized())
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

async fn first_listing(
    stream: &StreamId,
    api: &dyn KinesisApi,
) -> Result<Vec<crate::kinesis::ShardInfo>, SubmitErrorKind> {
    let mut last = String::new();
    for attempt in 0..FIRST_LOAD_ATTEMPTS {
        match api.list_shards(stream, true).await {
            Ok(shards) if !shards.is_empty() => return Ok(shards),
            Ok(_) => last = "the stream has no open shards".into(),
            Err(CallError::Service { code, .. }) if code == "ResourceNotFoundException" => {
                return Err(SubmitErrorKind::StreamNotFound {
                    stream: stream.to_string(),
                });
            }
            Err(e) => last = format!("{}: {}", e.code(), e.message()),
        }
        tokio::time::sleep(Duration::from_millis(200) * 2u32.pow(attempt)).await;
    }
    Err(SubmitErrorKind::ShardMap {
        stream: stream.to_string(),
        message: last,
    })
}

/// Marks a refresh as started; false when one is already running.
pub(crate) fn begin_refresh(entry: &StreamEntry) -> bool {
    !entry.refreshing.swap(true, Ordering::AcqRel)
}

/// Marks a refresh as finished.
pub(crate) fn end_refresh(entry: &StreamEntry) {
    entry.refreshing.store(false, Ordering::Release);
}
