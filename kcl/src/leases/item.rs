//! The lease table's row format: the Java KCL's attribute names and the conversion between a
//! [`Lease`] and a DynamoDB item. Reading tolerates attributes it does not know (a Java KCL 3.x
//! writes more), and a malformed row is a typed error that names the attribute.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use kinesis_format::HashKeyRange;

use super::lease::{CheckpointPosition, Lease};
use super::store::LeaseError;

pub(super) const LEASE_KEY: &str = "leaseKey";
pub(super) const LEASE_OWNER: &str = "leaseOwner";
pub(super) const LEASE_COUNTER: &str = "leaseCounter";
pub(super) const OWNER_SWITCHES: &str = "ownerSwitchesSinceCheckpoint";
pub(super) const CHECKPOINT: &str = "checkpoint";
pub(super) const CHECKPOINT_SUB: &str = "checkpointSubSequenceNumber";
pub(super) const PENDING_CHECKPOINT: &str = "pendingCheckpoint";
pub(super) const PENDING_CHECKPOINT_SUB: &str = "pendingCheckpointSubSequenceNumber";
pub(super) const PARENT_SHARD_IDS: &str = "parentShardId";
pub(super) const CHILD_SHARD_IDS: &str = "childShardIds";
pub(super) const STARTING_HASH_KEY: &str = "startingHashKey";
pub(super) const ENDING_HASH_KEY: &str = "endingHashKey";
pub(super) const STREAM: &str = "kinesisRsStream";
pub(super) const CHECKPOINT_OWNER: &str = "checkpointOwner";
pub(super) const THROUGHPUT: &str = "throughputKBps";
/// Multi-stream leases: the stream's identifier (`account:name:creationEpoch`; the Java KCL keeps
/// the name `streamName` "for legacy reasons") and the shard id.
pub(super) const STREAM_NAME: &str = "streamName";
pub(super) const SHARD_ID: &str = "shardId";
/// KCL 3.5+ keeps other entities in the lease table (leader lock, worker metrics, migration
/// state), each with this attribute; a lease has none or `LEASE`.
pub(super) const ENTITY_TYPE: &str = "entityType";

/// Whether a row of the lease table is a lease (not one of KCL 3.5+'s other entities, which a
/// worker must neither read as a lease nor change).
pub(super) fn is_lease_row(item: &Item) -> bool {
    match item.get(ENTITY_TYPE) {
        None => true,
        Some(v) => v.as_s().is_ok_and(|t| t == "LEASE"),
    }
}

/// A DynamoDB item.
pub(super) type Item = HashMap<String, AttributeValue>;

pub(super) fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

pub(super) fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// A throughput as a DynamoDB number (two decimals, as KCL 3.x writes a double).
pub(super) fn kbps_value(kbps: f64) -> AttributeValue {
    AttributeValue::N(format!("{:.2}", kbps.max(0.0)))
}

/// The item for a new lease.
pub(super) fn to_item(lease: &Lease) -> Item {
    let mut item = Item::new();
    item.insert(LEASE_KEY.into(), s(&lease.key));
    item.insert(LEASE_COUNTER.into(), n(lease.counter));
    if let Some(owner) = &lease.owner {
        item.insert(LEASE_OWNER.into(), s(owner));
    }
    item.insert(
        OWNER_SWITCHES.into(),
        n(lease.owner_switches_since_checkpoint),
    );
    let (checkpoint, sub) = lease.checkpoint.as_stored();
    item.insert(CHECKPOINT.into(), s(&checkpoint));
    item.insert(CHECKPOINT_SUB.into(), n(sub));
    if let Some(p) = &lease.pending_checkpoint {
        let (text, sub) = p.as_stored();
        item.insert(PENDING_CHECKPOINT.into(), s(&text));
        item.insert(PENDING_CHECKPOINT_SUB.into(), n(sub));
    }
    if !lease.parent_shard_ids.is_empty() {
        item.insert(
            PARENT_SHARD_IDS.into(),
            AttributeValue::Ss(lease.parent_shard_ids.clone()),
        );
    }
    if !lease.child_shard_ids.is_empty() {
        item.insert(
            CHILD_SHARD_IDS.into(),
            AttributeValue::Ss(lease.child_shard_ids.clone()),
        );
    }
    if let Some(range) = lease.hash_key_range {
        item.insert(STARTING_HASH_KEY.into(), s(&range.start.to_string()));
        item.insert(ENDING_HASH_KEY.into(), s(&range.end.to_string()));
    }
    if let Some(stream) = &lease.stream {
        item.insert(STREAM.into(), s(stream));
    }
    if let Some(owner) = &lease.checkpoint_owner {
        item.insert(CHECKPOINT_OWNER.into(), s(owner));
    }
    if let Some(kbps) = lease.throughput_kbps {
        item.insert(THROUGHPUT.into(), kbps_value(kbps));
    }
    if let Some(stream) = &lease.stream_identifier {
        item.insert(STREAM_NAME.into(), s(stream));
    }
    if let Some(shard) = &lease.shard_id {
        item.insert(SHARD_ID.into(), s(shard));
    }
    item
}

/// A lease from a table item (a Java KCL's included).
pub(super) fn from_item(item: &Item) -> Result<Lease, LeaseError> {
    let key = item
        .get(LEASE_KEY)
        .and_then(|v| v.as_s().ok())
        .cloned()
        .unwrap_or_default();
    let malformed = |message: String| LeaseError::Malformed {
        key: key.clone(),
        message,
    };
    let string = |attr: &str| item.get(attr).and_then(|v| v.as_s().ok()).cloned();
    let number = |attr: &str| -> Result<u64, LeaseError> {
        match item.get(attr) {
            None => Ok(0),
            Some(v) => v
                .as_n()
                .map_err(|_| malformed(format!("{attr} is not a number")))?
                .parse::<u64>()
                .map_err(|e| malformed(format!("{attr}: {e}"))),
        }
    };
    let set = |attr: &str| {
        item.get(attr)
            .and_then(|v| v.as_ss().ok())
            .cloned()
            .unwrap_or_default()
    };
    if key.is_empty() {
        return Err(malformed("no leaseKey".into()));
    }
    let checkpoint = CheckpointPosition::from_stored(
        string(CHECKPOINT).as_deref().unwrap_or("TRIM_HORIZON"),
        number(CHECKPOINT_SUB)?,
    )
    .map_err(malformed)?;
    let pending_checkpoint = match string(PENDING_CHECKPOINT).filter(|p| !p.is_empty()) {
        Some(p) => Some(
            CheckpointPosition::from_stored(&p, number(PENDING_CHECKPOINT_SUB)?)
                .map_err(malformed)?,
        ),
        None => None,
    };
    let hash_key_range = match (string(STARTING_HASH_KEY), string(ENDING_HASH_KEY)) {
        (Some(start), Some(end)) => {
            Some(HashKeyRange::parse(&start, &end).map_err(|e| malformed(e.to_string()))?)
        }
        _ => None,
    };
    Ok(Lease {
        owner: string(LEASE_OWNER),
        counter: number(LEASE_COUNTER)?,
        owner_switches_since_checkpoint: number(OWNER_SWITCHES)?,
        checkpoint,
        pending_checkpoint,
        parent_shard_ids: set(PARENT_SHARD_IDS),
        child_shard_ids: set(CHILD_SHARD_IDS),
        hash_key_range,
        stream: string(STREAM),
        checkpoint_owner: string(CHECKPOINT_OWNER),
        // A throughput that does not read as a non-negative number is left out, not fatal: it
        // only steers balancing.
        throughput_kbps: item
            .get(THROUGHPUT)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0),
        stream_identifier: string(STREAM_NAME),
        shard_id: string(SHARD_ID),
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kinesis_format::{HashKey, SequenceNumber};

    #[test]
    fn items_round_trip_with_kcl_attribute_names() {
        let mut lease = Lease::new(
            "shardId-000000000003",
            CheckpointPosition::Sequence {
                sequence: SequenceNumber::parse(
                    "4959033827149025660855969253836157109592157598913658",
                )
                .unwrap(),
                sub_sequence: 12,
            },
        )
        .with_parents(vec!["shardId-000000000001".into()])
        .with_hash_key_range(HashKeyRange::new(HashKey(5), HashKey(u128::MAX)).unwrap());
        lease.owner = Some("worker-1".into());
        lease.counter = 42;
        lease.pending_checkpoint = Some(CheckpointPosition::ShardEnd);
        lease.checkpoint_owner = Some("worker-0".into());
        lease.throughput_kbps = Some(12.5);
        let item = to_item(&lease);
        for attr in [
            LEASE_KEY,
            LEASE_OWNER,
            LEASE_COUNTER,
            CHECKPOINT,
            CHECKPOINT_SUB,
            PARENT_SHARD_IDS,
            STARTING_HASH_KEY,
            CHECKPOINT_OWNER,
            THROUGHPUT,
        ] {
            assert!(item.contains_key(attr), "{attr}");
        }
        assert_eq!(item[CHECKPOINT_SUB], n(12));
        assert_eq!(from_item(&item).unwrap(), lease);
    }

    #[test]
    fn a_multi_stream_lease_has_the_java_kcl_key_and_attributes() {
        let lease = Lease::in_stream(
            "123456789012:orders:1700000000",
            "shardId-000000000004",
            CheckpointPosition::TrimHorizon,
        )
        .with_parents(vec!["shardId-000000000001".into()]);
        let item = to_item(&lease);
        assert_eq!(
            item[LEASE_KEY],
            s("123456789012:orders:1700000000:shardId-000000000004")
        );
        assert_eq!(item[STREAM_NAME], s("123456789012:orders:1700000000"));
        assert_eq!(item[SHARD_ID], s("shardId-000000000004"));
        let read = from_item(&item).unwrap();
        assert_eq!(read, lease);
        assert_eq!(read.shard(), "shardId-000000000004");
        assert_eq!(
            read.key_of_shard("shardId-000000000001"),
            "123456789012:orders:1700000000:shardId-000000000001"
        );
        let single = Lease::new("shardId-000000000004", CheckpointPosition::TrimHorizon);
        assert!(!to_item(&single).contains_key(STREAM_NAME));
        assert_eq!(
            single.key_of_shard("shardId-000000000001"),
            "shardId-000000000001"
        );
    }

    #[test]
    fn a_java_kcl_row_with_extra_attributes_reads() {
        let mut item = Item::new();
        item.insert(LEASE_KEY.into(), s("shardId-000000000000"));
        item.insert(LEASE_COUNTER.into(), n(7));
        item.insert(CHECKPOINT.into(), s("TRIM_HORIZON"));
        item.insert(CHECKPOINT_SUB.into(), n(0));
        item.insert("throughputKBps".into(), AttributeValue::N("12.5".into()));
        item.insert("checkpointOwner".into(), s("w"));
        let lease = from_item(&item).unwrap();
        assert_eq!(
            (lease.counter, lease.checkpoint),
            (7, CheckpointPosition::TrimHorizon)
        );
    }

    #[test]
    fn rows_of_other_kcl_entities_are_not_leases() {
        let mut item = Item::new();
        item.insert(LEASE_KEY.into(), s("shardId-000000000000"));
        assert!(is_lease_row(&item), "a row without entityType is a lease");
        item.insert(ENTITY_TYPE.into(), s("LEASE"));
        assert!(is_lease_row(&item));
        for other in ["WORKER_METRIC_STATS", "LEADER", "STREAM", "TABLE_MIGRATION"] {
            item.insert(ENTITY_TYPE.into(), s(other));
            assert!(!is_lease_row(&item), "{other}");
        }
    }

    #[test]
    fn malformed_rows_say_what_is_wrong() {
        let mut item = Item::new();
        item.insert(LEASE_KEY.into(), s("k"));
        item.insert(LEASE_COUNTER.into(), s("seven"));
        let err = from_item(&item).unwrap_err();
        assert!(err.to_string().contains("leaseCounter"), "{err}");
    }
}
