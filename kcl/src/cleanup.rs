//! Completed-shard lease cleanup: a lease at SHARD_END is deleted once every child shard recorded
//! on it has a lease that has started (its checkpoint is past its initial position), so nobody
//! needs the parent's checkpoint any more. Shard sync never recreates a lease for a shard whose
//! child already has one, so a deleted parent stays deleted.

use std::collections::HashMap;

use crate::leases::{CheckpointPosition, Lease, LeaseStore};

/// Deletes the leases of finished shards whose children have started.
pub(crate) async fn run(store: &dyn LeaseStore) {
    let leases = match store.list().await {
        Ok(leases) => leases,
        Err(e) => return tracing::warn!(error = %e, "lease cleanup could not list leases"),
    };
    for key in deletable(&leases) {
        match store.delete(&key).await {
            Ok(()) => {
                tracing::info!(lease = %key, "deleted the lease of a finished shard whose children have started")
            }
            Err(e) => tracing::warn!(lease = %key, error = %e, "lease cleanup failed"),
        }
    }
}

/// The keys of the leases that can be deleted now.
pub(crate) fn deletable(leases: &[Lease]) -> Vec<String> {
    let by_key: HashMap<&str, &Lease> = leases.iter().map(|l| (l.key.as_str(), l)).collect();
    let started = |key: &str| {
        by_key.get(key).is_some_and(|l| {
            matches!(
                l.checkpoint,
                CheckpointPosition::Sequence { .. } | CheckpointPosition::ShardEnd
            )
        })
    };
    leases
        .iter()
        .filter(|l| l.is_finished() && !l.child_shard_ids.is_empty())
        .filter(|l| (l.child_shard_ids.iter()).all(|c| started(&l.key_of_shard(c))))
        .map(|l| l.key.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kinesis_format::SequenceNumber;

    fn lease(key: &str, checkpoint: CheckpointPosition, children: &[&str]) -> Lease {
        let mut l = Lease::new(key, checkpoint);
        l.child_shard_ids = children.iter().map(|c| (*c).to_owned()).collect();
        l
    }

    fn at(seq: &str) -> CheckpointPosition {
        CheckpointPosition::Sequence {
            sequence: SequenceNumber::parse(seq).unwrap(),
            sub_sequence: 0,
        }
    }

    #[test]
    fn a_finished_parent_goes_once_all_children_started() {
        let parent = lease("p", CheckpointPosition::ShardEnd, &["a", "b"]);
        let a = lease("a", at("5"), &[]);
        let b_new = lease("b", CheckpointPosition::TrimHorizon, &[]);
        let b_started = lease("b", at("9"), &[]);
        assert!(
            deletable(&[parent.clone(), a.clone(), b_new]).is_empty(),
            "b has not started"
        );
        assert!(
            deletable(&[parent.clone(), a.clone()]).is_empty(),
            "b has no lease yet"
        );
        assert_eq!(deletable(&[parent, a, b_started]), ["p"]);
    }

    #[test]
    fn a_multi_stream_parent_finds_its_children_in_its_own_stream() {
        let in_stream = |stream: &str, shard: &str, checkpoint, children: &[&str]| {
            let mut l = Lease::in_stream(stream, shard, checkpoint);
            l.child_shard_ids = children.iter().map(|c| (*c).to_owned()).collect();
            l
        };
        let parent = in_stream("1:a:9", "p", CheckpointPosition::ShardEnd, &["c"]);
        let other_stream_child = in_stream("1:b:9", "c", at("5"), &[]);
        assert!(deletable(&[parent.clone(), other_stream_child]).is_empty());
        let child = in_stream("1:a:9", "c", at("5"), &[]);
        assert_eq!(deletable(&[parent, child]), ["1:a:9:p"]);
    }

    #[test]
    fn unfinished_or_childless_leases_stay() {
        let open = lease("o", at("3"), &["x"]);
        let childless = lease("c", CheckpointPosition::ShardEnd, &[]);
        let x = lease("x", at("4"), &[]);
        assert!(deletable(&[open, childless, x]).is_empty());
    }
}
