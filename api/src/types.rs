//! The project's own Kinesis types: what the producer and consumer need of the API's shapes.

use std::time::SystemTime;

use bytes::Bytes;
use kinesis_format::HashKeyRange;

/// What DescribeStreamSummary says of a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamSummary {
    /// The stream's name.
    pub name: String,
    /// The stream's ARN.
    pub arn: String,
    /// When the stream was created, in seconds since the epoch.
    pub created_epoch_seconds: i64,
    /// The largest record the stream accepts, in KiB, where the endpoint reports it.
    pub max_record_size_kib: Option<i32>,
}

impl StreamSummary {
    /// A summary (for implementations of [`crate::Kinesis`]).
    pub fn new(
        name: impl Into<String>,
        arn: impl Into<String>,
        created_epoch_seconds: i64,
    ) -> Self {
        StreamSummary {
            name: name.into(),
            arn: arn.into(),
            created_epoch_seconds,
            max_record_size_kib: None,
        }
    }

    /// `account:name:creationEpoch`, as the Java KCL names a stream in multi-stream leases: a
    /// stream deleted and created again under the same name gets another identifier.
    pub fn identifier(&self) -> String {
        // arn:partition:kinesis:region:account:stream/name
        let account = self.arn.split(':').nth(4).unwrap_or("");
        format!("{account}:{}:{}", self.name, self.created_epoch_seconds)
    }
}

/// Which shards ListShards returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardFilter {
    /// Every shard still retained, open and closed.
    All,
    /// Only the open shards (ShardFilter AT_LATEST).
    Open,
}

/// A shard of a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Shard {
    /// Its id.
    pub id: String,
    /// Its parent (after a split or merge) and adjacent parent (after a merge).
    pub parents: Vec<String>,
    /// The hash keys it owns.
    pub range: HashKeyRange,
    /// Whether it was closed by a split or merge (it has an ending sequence number).
    pub closed: bool,
}

impl Shard {
    /// A shard (for implementations of [`crate::Kinesis`] and tests).
    pub fn new(
        id: impl Into<String>,
        parents: Vec<String>,
        range: HashKeyRange,
        closed: bool,
    ) -> Self {
        Shard {
            id: id.into(),
            parents,
            range,
            closed,
        }
    }
}

/// A child shard announced at a shard's end.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChildShard {
    /// Its id.
    pub id: String,
    /// Its parents (one after a split, two after a merge).
    pub parents: Vec<String>,
    /// The hash keys it owns.
    pub range: Option<HashKeyRange>,
}

impl ChildShard {
    /// A child shard (for implementations of [`crate::Kinesis`] and tests).
    pub fn new(id: impl Into<String>, parents: Vec<String>, range: Option<HashKeyRange>) -> Self {
        ChildShard {
            id: id.into(),
            parents,
            range,
        }
    }
}

/// A Kinesis record as GetRecords returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Record {
    /// Its sequence number, as Kinesis wrote it.
    pub sequence_number: String,
    /// Its partition key.
    pub partition_key: String,
    /// Its data (an aggregate, or a raw record).
    pub data: Bytes,
    /// When Kinesis received it.
    pub approximate_arrival: Option<SystemTime>,
}

impl Record {
    /// A record (for implementations of [`crate::Kinesis`] and tests).
    pub fn new(
        sequence_number: impl Into<String>,
        partition_key: impl Into<String>,
        data: impl Into<Bytes>,
    ) -> Self {
        Record {
            sequence_number: sequence_number.into(),
            partition_key: partition_key.into(),
            data: data.into(),
            approximate_arrival: None,
        }
    }
}

/// One GetRecords answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordsPage {
    /// The records, in order.
    pub records: Vec<Record>,
    /// The iterator for the next call; `None` at the shard's end.
    pub next_iterator: Option<String>,
    /// How far behind the tip of the shard this page is.
    pub millis_behind_latest: Option<i64>,
    /// At the shard's end: its children.
    pub child_shards: Vec<ChildShard>,
}

impl RecordsPage {
    /// A page (for implementations of [`crate::Kinesis`] and tests).
    pub fn new(records: Vec<Record>, next_iterator: Option<String>) -> Self {
        RecordsPage {
            records,
            next_iterator,
            millis_behind_latest: None,
            child_shards: Vec::new(),
        }
    }
}

/// Where an iterator starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IteratorStart {
    /// The oldest record retained.
    TrimHorizon,
    /// After the newest record.
    Latest,
    /// The first record at or after this time.
    AtTimestamp(SystemTime),
    /// This record.
    AtSequence(String),
    /// Right after this record.
    AfterSequence(String),
}

/// One record of a PutRecords call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutEntry {
    /// Its partition key.
    pub partition_key: String,
    /// Its explicit hash key (decimal), if any.
    pub explicit_hash_key: Option<String>,
    /// Its data.
    pub data: Bytes,
}

/// The result of one PutRecords entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PutResult {
    /// Stored.
    Stored {
        /// Where.
        shard_id: String,
        /// At which sequence number.
        sequence_number: String,
    },
    /// Not stored.
    Failed {
        /// The error code (ProvisionedThroughputExceededException, InternalFailure, ...).
        code: String,
        /// The service's message.
        message: String,
    },
}
