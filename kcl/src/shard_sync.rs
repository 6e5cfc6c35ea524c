//! Shard sync: makes sure every shard the worker should process has a lease.
//!
//! - TRIM_HORIZON / AT_TIMESTAMP: a lease for every listed shard, parents included, so history is
//!   processed oldest first (a child waits for its parents' SHARD_END).
//! - LATEST: leases only for the open shards, without parents (no history to wait for).
//! - Children discovered at a shard's end (GetRecords' ChildShards) get leases at once, starting
//!   at TRIM_HORIZON, with their parents recorded.
//!
//! Leases are created in shard-id order, which lists parents before their children. Existing
//! leases are never overwritten, and a shard whose child already has a lease gets none (it was
//! finished, and its lease may have been cleaned up).

use aws_sdk_kinesis::types::{ChildShard, Shard};
use kinesis_format::HashKeyRange;

use crate::config::InitialPosition;
use crate::leases::{CheckpointPosition, Lease, LeaseStore};
use crate::stream::{StreamRef, with_stream};

/// Every shard of the stream (open and closed), all pages.
pub(crate) async fn list_all_shards(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &StreamRef,
) -> Result<Vec<Shard>, String> {
    let mut shards = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let request = match token.take() {
            Some(t) => kinesis.list_shards().next_token(t),
            None => with_stream!(kinesis.list_shards(), stream),
        };
        let page = request.send().await.map_err(|e| {
            format!(
                "ListShards: {}",
                aws_sdk_kinesis::error::DisplayErrorContext(e)
            )
        })?;
        shards.extend(page.shards.unwrap_or_default());
        match page.next_token {
            Some(t) => token = Some(t),
            None => return Ok(shards),
        }
    }
}

fn range_of(range: Option<&aws_sdk_kinesis::types::HashKeyRange>) -> Option<HashKeyRange> {
    range.and_then(|r| HashKeyRange::parse(r.starting_hash_key(), r.ending_hash_key()).ok())
}

/// Creates the leases the initial position calls for; returns how many were new.
pub(crate) async fn sync(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &StreamRef,
    store: &dyn LeaseStore,
    initial: InitialPosition,
) -> Result<usize, String> {
    let mut shards = list_all_shards(kinesis, stream).await?;
    // A shard whose child already has a lease was finished (and perhaps cleaned up): never again.
    let existing = store.list().await.map_err(|e| e.to_string())?;
    let superseded: std::collections::HashSet<&str> = existing
        .iter()
        .flat_map(|l| l.parent_shard_ids.iter().map(String::as_str))
        .collect();
    shards.sort_by(|a, b| a.shard_id().cmp(b.shard_id()));
    let start = match initial {
        InitialPosition::Latest => CheckpointPosition::Latest,
        InitialPosition::TrimHorizon => CheckpointPosition::TrimHorizon,
        InitialPosition::AtTimestamp(_) => CheckpointPosition::AtTimestamp,
    };
    let mut created = 0;
    for shard in &shards {
        if superseded.contains(shard.shard_id()) {
            continue;
        }
        let open = shard
            .sequence_number_range()
            .is_none_or(|r| r.ending_sequence_number().is_none());
        let parents: Vec<String> = match initial {
            InitialPosition::Latest if !open => continue,
            InitialPosition::Latest => Vec::new(),
            _ => shard
                .parent_shard_id()
                .into_iter()
                .chain(shard.adjacent_parent_shard_id())
                .map(str::to_owned)
                .collect(),
        };
        let mut lease = Lease::new(shard.shard_id(), start.clone()).with_parents(parents);
        lease.hash_key_range = range_of(shard.hash_key_range());
        if store
            .create_if_absent(&lease)
            .await
            .map_err(|e| e.to_string())?
        {
            created += 1;
        }
    }
    Ok(created)
}

/// Creates leases for the children a shard's end announced.
pub(crate) async fn create_child_leases(
    store: &dyn LeaseStore,
    children: &[ChildShard],
) -> Result<(), String> {
    let mut children: Vec<&ChildShard> = children.iter().collect();
    children.sort_by(|a, b| a.shard_id().cmp(b.shard_id()));
    for child in children {
        let mut lease = Lease::new(child.shard_id(), CheckpointPosition::TrimHorizon)
            .with_parents(child.parent_shards().to_vec());
        lease.hash_key_range = range_of(child.hash_key_range());
        store
            .create_if_absent(&lease)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
