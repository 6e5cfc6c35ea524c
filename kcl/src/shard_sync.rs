//! Shard sync: makes sure every shard the worker should process has a lease.
//!
//! - A shard whose parent (or either parent of a merge) already has a lease starts at
//!   TRIM_HORIZON with its parents recorded, whatever the initial position: it was created by a
//!   reshard while the application was consuming, so its first records come right after its
//!   parents' last ones, and it waits until the parents reach SHARD_END (as the Java KCL's sync of
//!   a non-empty lease table). This keeps parent-before-child order under `Latest` too.
//! - Otherwise (the application's first look at those shards):
//!   - TRIM_HORIZON / AT_TIMESTAMP: a lease for every listed shard at the initial position,
//!     parents recorded, so history is processed oldest first;
//!   - LATEST: leases only for the open shards, at LATEST, without parents (no history to wait
//!     for).
//! - Children discovered at a shard's end (GetRecords' ChildShards) get leases at once, starting
//!   at TRIM_HORIZON, with their parents recorded.
//!
//! Leases are created in shard-id order, which lists parents before their children. Existing
//! leases are never overwritten, and a shard whose child already has a lease gets none (it was
//! finished, and its lease may have been cleaned up).

use std::collections::{HashMap, HashSet};

use aws_sdk_kinesis::types::{ChildShard, Shard};
use kinesis_format::HashKeyRange;
use kinesis_retry::{AwsError, retry};

use crate::config::InitialPosition;
use crate::leases::{CheckpointPosition, Lease, LeaseError, LeaseStore};
use crate::retrieval::control_policy;
use crate::stream::{StreamRef, with_stream};

/// Why a shard sync failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SyncError {
    #[error(transparent)]
    Kinesis(AwsError),
    #[error(transparent)]
    Leases(LeaseError),
}

/// The stream as DescribeStreamSummary reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StreamInfo {
    /// `account:name:creationEpoch`, as the Java KCL names a stream in multi-stream lease keys.
    pub(crate) identifier: String,
}

/// Checks that the stream exists and learns its identity.
pub(crate) async fn describe_stream(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &StreamRef,
) -> Result<StreamInfo, AwsError> {
    let request = with_stream!(kinesis.describe_stream_summary(), stream);
    let output = retry(control_policy(), AwsError::class, || async {
        request
            .clone()
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("Kinesis DescribeStreamSummary", e))
    })
    .await?;
    let summary = output.stream_description_summary();
    let (arn, name) = match summary {
        Some(s) => (s.stream_arn(), s.stream_name()),
        None => ("", stream.as_str()),
    };
    // arn:partition:kinesis:region:account:stream/name
    let account = arn.split(':').nth(4).unwrap_or("");
    let epoch = summary.map_or(0, |s| s.stream_creation_timestamp().secs());
    Ok(StreamInfo {
        identifier: format!("{account}:{name}:{epoch}"),
    })
}

/// Every shard of the stream (open and closed), all pages.
pub(crate) async fn list_all_shards(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &StreamRef,
) -> Result<Vec<Shard>, AwsError> {
    let mut shards = Vec::new();
    let mut token: Option<String> = None;
    loop {
        // A later page names the token only: the API refuses the stream with it.
        let request = match token.take() {
            Some(t) => kinesis.list_shards().next_token(t),
            None => with_stream!(kinesis.list_shards(), stream),
        };
        let page = retry(control_policy(), AwsError::class, || async {
            request
                .clone()
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("Kinesis ListShards", e))
        })
        .await?;
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

fn parents_of(shard: &Shard) -> Vec<String> {
    shard
        .parent_shard_id()
        .into_iter()
        .chain(shard.adjacent_parent_shard_id())
        .map(str::to_owned)
        .collect()
}

/// The lease a shard without one should get, or `None` when it should get none.
fn new_lease(
    shard: &Shard,
    leased: &HashSet<&str>,
    initial: InitialPosition,
    stream: &str,
) -> Option<Lease> {
    let parents = parents_of(shard);
    let open = shard
        .sequence_number_range()
        .is_none_or(|r| r.ending_sequence_number().is_none());
    let (start, parents) = if parents.iter().any(|p| leased.contains(p.as_str())) {
        (CheckpointPosition::TrimHorizon, parents)
    } else {
        match initial {
            InitialPosition::Latest if !open => return None,
            InitialPosition::Latest => (CheckpointPosition::Latest, Vec::new()),
            InitialPosition::TrimHorizon => (CheckpointPosition::TrimHorizon, parents),
            InitialPosition::AtTimestamp(_) => (CheckpointPosition::AtTimestamp, parents),
        }
    };
    let mut lease = Lease::new(shard.shard_id(), start).with_parents(parents);
    lease.hash_key_range = range_of(shard.hash_key_range());
    lease.stream = Some(stream.to_owned());
    Some(lease)
}

/// Creates the leases the rules above call for; returns how many were new.
pub(crate) async fn sync(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &StreamRef,
    identifier: &str,
    store: &dyn LeaseStore,
    initial: InitialPosition,
) -> Result<usize, SyncError> {
    let mut shards = list_all_shards(kinesis, stream)
        .await
        .map_err(SyncError::Kinesis)?;
    let existing = store.list().await.map_err(SyncError::Leases)?;
    let existing: HashMap<&str, &Lease> = existing.iter().map(|l| (l.key.as_str(), l)).collect();
    // A shard whose child already has a lease was finished (and perhaps cleaned up): never again.
    let superseded: HashSet<&str> = existing
        .values()
        .flat_map(|l| l.parent_shard_ids.iter().map(String::as_str))
        .collect();
    let leased: HashSet<&str> = existing.keys().copied().collect();
    shards.sort_by(|a, b| a.shard_id().cmp(b.shard_id()));
    let mut created = 0;
    for shard in &shards {
        let id = shard.shard_id();
        if existing.contains_key(id) || superseded.contains(id) {
            continue;
        }
        let Some(lease) = new_lease(shard, &leased, initial, identifier) else {
            continue;
        };
        if store
            .create_if_absent(&lease)
            .await
            .map_err(SyncError::Leases)?
        {
            tracing::info!(lease = %lease.key, start = %lease.checkpoint, parents = ?lease.parent_shard_ids, "created lease");
            created += 1;
        }
    }
    Ok(created)
}

/// Creates leases for the children a shard's end announced.
pub(crate) async fn create_child_leases(
    store: &dyn LeaseStore,
    children: &[ChildShard],
    identifier: &str,
) -> Result<(), LeaseError> {
    let mut children: Vec<&ChildShard> = children.iter().collect();
    children.sort_by(|a, b| a.shard_id().cmp(b.shard_id()));
    for child in children {
        let mut lease = Lease::new(child.shard_id(), CheckpointPosition::TrimHorizon)
            .with_parents(child.parent_shards().to_vec());
        lease.hash_key_range = range_of(child.hash_key_range());
        lease.stream = Some(identifier.to_owned());
        store.create_if_absent(&lease).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_kinesis::types::SequenceNumberRange;

    fn shard(id: &str, parents: &[&str], open: bool) -> Shard {
        let mut range = SequenceNumberRange::builder().starting_sequence_number("1");
        if !open {
            range = range.ending_sequence_number("9");
        }
        let mut b = Shard::builder()
            .shard_id(id)
            .sequence_number_range(range.build().unwrap());
        if let Some(p) = parents.first() {
            b = b.parent_shard_id(*p);
        }
        if let Some(p) = parents.get(1) {
            b = b.adjacent_parent_shard_id(*p);
        }
        b.build().unwrap()
    }

    #[test]
    fn children_of_a_leased_shard_start_at_trim_horizon_after_their_parents_whatever_the_position()
    {
        let leased: HashSet<&str> = ["s0", "s1"].into();
        for initial in [
            InitialPosition::Latest,
            InitialPosition::TrimHorizon,
            InitialPosition::AtTimestamp(std::time::SystemTime::UNIX_EPOCH),
        ] {
            // A split of s0 and a merge of s0's sibling s1 with another.
            let split = new_lease(&shard("s2", &["s0"], true), &leased, initial, "x").unwrap();
            assert_eq!(
                split.checkpoint,
                CheckpointPosition::TrimHorizon,
                "{initial:?}"
            );
            assert_eq!(split.parent_shard_ids, ["s0"]);
            let merge =
                new_lease(&shard("s3", &["s1", "s9"], true), &leased, initial, "x").unwrap();
            assert_eq!(
                merge.checkpoint,
                CheckpointPosition::TrimHorizon,
                "{initial:?}"
            );
            assert_eq!(merge.parent_shard_ids, ["s1", "s9"]);
        }
    }

    #[test]
    fn a_first_sync_follows_the_initial_position() {
        let none = HashSet::new();
        let latest = InitialPosition::Latest;
        assert!(new_lease(&shard("s0", &[], false), &none, latest, "x").is_none());
        let open = new_lease(&shard("s1", &["s0"], true), &none, latest, "x").unwrap();
        assert_eq!(
            (open.checkpoint, open.parent_shard_ids.len()),
            (CheckpointPosition::Latest, 0)
        );
        let th = InitialPosition::TrimHorizon;
        let closed = new_lease(&shard("s0", &[], false), &none, th, "x").unwrap();
        assert_eq!(closed.checkpoint, CheckpointPosition::TrimHorizon);
        let child = new_lease(&shard("s1", &["s0"], true), &none, th, "x").unwrap();
        assert_eq!(child.parent_shard_ids, ["s0"]);
        assert_eq!(child.stream.as_deref(), Some("x"));
    }
}
