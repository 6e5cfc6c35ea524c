//! A lease: one worker's claim on one shard, with the shard's checkpoint. Field names follow the
//! Java KCL's lease table so a table written by either can be read by the other.

use std::fmt;

use kinesis_format::{HashKeyRange, SequenceNumber};

/// Where a shard's processing stands: a position, or one of the KCL's sentinel values.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CheckpointPosition {
    /// Not started; begin at the oldest record.
    TrimHorizon,
    /// Not started; begin at the newest record.
    Latest,
    /// Not started; begin at the worker's configured timestamp.
    AtTimestamp,
    /// The shard was read to its end and its processor checkpointed that.
    ShardEnd,
    /// The last processed user record.
    Sequence {
        /// Its Kinesis record's sequence number.
        sequence: SequenceNumber,
        /// Its index inside that record's aggregate (0 for a raw record).
        sub_sequence: u64,
    },
}

impl CheckpointPosition {
    /// The string KCL stores in the `checkpoint` attribute.
    pub fn as_stored(&self) -> (String, u64) {
        match self {
            CheckpointPosition::TrimHorizon => ("TRIM_HORIZON".into(), 0),
            CheckpointPosition::Latest => ("LATEST".into(), 0),
            CheckpointPosition::AtTimestamp => ("AT_TIMESTAMP".into(), 0),
            CheckpointPosition::ShardEnd => ("SHARD_END".into(), 0),
            CheckpointPosition::Sequence {
                sequence,
                sub_sequence,
            } => (sequence.to_string(), *sub_sequence),
        }
    }

    /// Reads the `checkpoint` and `checkpointSubSequenceNumber` attributes.
    pub fn from_stored(checkpoint: &str, sub_sequence: u64) -> Result<Self, String> {
        Ok(match checkpoint {
            "TRIM_HORIZON" => CheckpointPosition::TrimHorizon,
            "LATEST" => CheckpointPosition::Latest,
            "AT_TIMESTAMP" => CheckpointPosition::AtTimestamp,
            "SHARD_END" => CheckpointPosition::ShardEnd,
            digits => CheckpointPosition::Sequence {
                sequence: SequenceNumber::parse(digits).map_err(|e| e.to_string())?,
                sub_sequence,
            },
        })
    }
}

impl fmt::Display for CheckpointPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckpointPosition::Sequence {
                sequence,
                sub_sequence,
            } => write!(f, "{sequence}/{sub_sequence}"),
            other => f.write_str(&other.as_stored().0),
        }
    }
}

/// One row of the lease table.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Lease {
    /// The shard id (`leaseKey`).
    pub key: String,
    /// The worker holding it (`leaseOwner`), if any.
    pub owner: Option<String>,
    /// Bumped by every renew, take, release and checkpoint (`leaseCounter`); conditional writes
    /// compare it, and a counter that has not moved for the failover time means the owner is gone.
    pub counter: u64,
    /// `ownerSwitchesSinceCheckpoint`.
    pub owner_switches_since_checkpoint: u64,
    /// `checkpoint` + `checkpointSubSequenceNumber`.
    pub checkpoint: CheckpointPosition,
    /// `pendingCheckpoint` + `pendingCheckpointSubSequenceNumber` (two-phase checkpoints).
    pub pending_checkpoint: Option<CheckpointPosition>,
    /// `parentShardId`: one parent after a split, two after a merge.
    pub parent_shard_ids: Vec<String>,
    /// `childShardIds`, written at shard end.
    pub child_shard_ids: Vec<String>,
    /// `startingHashKey` / `endingHashKey`.
    pub hash_key_range: Option<HashKeyRange>,
    /// `kinesisRsStream`: the stream the lease belongs to, as `account:name:creationEpoch`
    /// (written by this crate on the leases it creates; a Java KCL ignores it, and rows without
    /// it are accepted). A worker refuses a table whose leases name another stream.
    pub stream: Option<String>,
    /// `checkpointOwner` (KCL 3.x): set while a graceful hand-off is under way. `owner` is
    /// then the worker the lease goes to, and this the worker still processing it, which
    /// checkpoints and then clears it; until then this one is the lease's actual owner.
    pub checkpoint_owner: Option<String>,
    /// `throughputKBps` (KCL 3.x): the data its owner read from the shard, KiB per second, an
    /// average over recent renew intervals (each new interval weighs half); written with each
    /// renewal. Throughput-aware balancing moves leases by it.
    pub throughput_kbps: Option<f64>,
    /// `streamName` (multi-stream leases, as the Java KCL's `MultiStreamLease`): the stream's
    /// identifier, `account:name:creationEpoch`. The lease key is then this identifier, `:`,
    /// and the shard id.
    pub stream_identifier: Option<String>,
    /// `shardId` (multi-stream leases): the shard, whose id is otherwise the lease key.
    pub shard_id: Option<String>,
}

impl Lease {
    /// A new, unowned lease for a shard, starting at `checkpoint`.
    pub fn new(key: impl Into<String>, checkpoint: CheckpointPosition) -> Self {
        Lease {
            key: key.into(),
            owner: None,
            counter: 0,
            owner_switches_since_checkpoint: 0,
            checkpoint,
            pending_checkpoint: None,
            parent_shard_ids: Vec::new(),
            child_shard_ids: Vec::new(),
            hash_key_range: None,
            stream: None,
            checkpoint_owner: None,
            throughput_kbps: None,
            stream_identifier: None,
            shard_id: None,
        }
    }

    /// A new, unowned multi-stream lease (the Java KCL's key and attributes): key
    /// `stream_identifier:shard_id`, with `streamName` and `shardId`.
    pub fn in_stream(
        stream_identifier: &str,
        shard_id: impl Into<String>,
        checkpoint: CheckpointPosition,
    ) -> Self {
        let shard_id = shard_id.into();
        Lease {
            stream_identifier: Some(stream_identifier.to_owned()),
            ..Lease::new(multi_stream_key(stream_identifier, &shard_id), checkpoint)
        }
        .with_shard_id(shard_id)
    }

    fn with_shard_id(mut self, shard_id: String) -> Self {
        self.shard_id = Some(shard_id);
        self
    }

    /// The shard this lease is for: `shardId` on a multi-stream lease, else the key.
    pub fn shard(&self) -> &str {
        self.shard_id.as_deref().unwrap_or(&self.key)
    }

    /// A multi-stream lease's stream name (from its `streamName` identifier).
    pub fn stream_name(&self) -> Option<&str> {
        crate::streams::name_in_identifier(self.stream_identifier.as_deref()?)
    }

    /// The key of the lease of `shard_id` in the same stream (its parents' and children's
    /// leases are named by shard id on the lease).
    pub fn key_of_shard(&self, shard_id: &str) -> String {
        match &self.stream_identifier {
            Some(stream) => multi_stream_key(stream, shard_id),
            None => shard_id.to_owned(),
        }
    }

    /// With these parent shards.
    pub fn with_parents(mut self, parents: Vec<String>) -> Self {
        self.parent_shard_ids = parents;
        self
    }

    /// With the shard's hash key range.
    pub fn with_hash_key_range(mut self, range: HashKeyRange) -> Self {
        self.hash_key_range = Some(range);
        self
    }

    /// Whether the shard was processed to its end.
    pub fn is_finished(&self) -> bool {
        self.checkpoint == CheckpointPosition::ShardEnd
    }

    /// The worker processing the lease: the checkpoint owner during a hand-off, else the owner.
    pub fn actual_owner(&self) -> Option<&str> {
        self.checkpoint_owner.as_deref().or(self.owner.as_deref())
    }

    /// Whether a graceful hand-off is under way (`checkpointOwner` is set).
    pub fn is_handing_off(&self) -> bool {
        self.checkpoint_owner.is_some()
    }
}

/// A multi-stream lease key: the stream's identifier, `:`, the shard id (as the Java KCL).
pub(crate) fn multi_stream_key(stream_identifier: &str, shard_id: &str) -> String {
    format!("{stream_identifier}:{shard_id}")
}

/// The state changes the lease table allows, as pure functions: each store checks its condition
/// and writes the result (the in-memory store literally; DynamoDB as an update expression).
impl Lease {
    /// Renewal: the owner proves it is alive by bumping the counter.
    pub(crate) fn renewed(&self) -> Lease {
        Lease {
            counter: self.counter + 1,
            ..self.clone()
        }
    }

    /// Taken by `owner` (an expired or stolen lease, or a new one); a hand-off under way ends.
    pub(crate) fn taken_by(&self, owner: &str) -> Lease {
        let switched = self.actual_owner().is_some_and(|o| o != owner);
        Lease {
            owner: Some(owner.to_owned()),
            checkpoint_owner: None,
            counter: self.counter + 1,
            owner_switches_since_checkpoint: self.owner_switches_since_checkpoint
                + u64::from(switched),
            ..self.clone()
        }
    }

    /// Released by its actual owner: nobody holds it, and any worker may take it at once; or,
    /// during a hand-off, the hand-off completes and the new owner may start.
    pub(crate) fn released(&self) -> Lease {
        Lease {
            owner: if self.is_handing_off() {
                self.owner.clone()
            } else {
                None
            },
            checkpoint_owner: None,
            counter: self.counter + 1,
            ..self.clone()
        }
    }

    /// A graceful hand-off from its owner to `new_owner` begins: the owner stays the actual
    /// owner (as checkpoint owner) until it has checkpointed and released the lease. The counter
    /// does not move, so the owner's renewals go on.
    pub(crate) fn handed_off_to(&self, new_owner: &str) -> Lease {
        Lease {
            owner: Some(new_owner.to_owned()),
            checkpoint_owner: self.owner.clone(),
            ..self.clone()
        }
    }

    /// A new checkpoint (and pending checkpoint) from the owner.
    pub(crate) fn checkpointed(
        &self,
        checkpoint: &CheckpointPosition,
        pending: Option<&CheckpointPosition>,
    ) -> Lease {
        Lease {
            counter: self.counter + 1,
            checkpoint: checkpoint.clone(),
            pending_checkpoint: pending.cloned(),
            owner_switches_since_checkpoint: 0,
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinels_and_positions_round_trip_through_their_stored_form() {
        let seq = SequenceNumber::parse("49590338271490256608559692538361571095921575989136588898")
            .unwrap();
        for p in [
            CheckpointPosition::TrimHorizon,
            CheckpointPosition::Latest,
            CheckpointPosition::AtTimestamp,
            CheckpointPosition::ShardEnd,
            CheckpointPosition::Sequence {
                sequence: seq,
                sub_sequence: 7,
            },
        ] {
            let (text, sub) = p.as_stored();
            assert_eq!(CheckpointPosition::from_stored(&text, sub), Ok(p));
        }
        assert!(CheckpointPosition::from_stored("garbage", 0).is_err());
    }
}
