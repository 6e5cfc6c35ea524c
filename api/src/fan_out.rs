//! Enhanced fan-out at the boundary: registered stream consumers and shard subscriptions, in the
//! project's own types. A subscription pushes events for up to five minutes, then ends; the
//! caller subscribes again from the last event's continuation sequence number.

use async_trait::async_trait;
use kinesis_retry::{AwsError, AwsErrorKind};

use crate::types::{ChildShard, Record};

/// A registered enhanced fan-out consumer (RegisterStreamConsumer, DescribeStreamConsumer).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamConsumer {
    /// Its ARN, which subscriptions name.
    pub arn: String,
    /// Its name, unique within the stream.
    pub name: String,
    /// Whether it can be subscribed with yet.
    pub status: ConsumerStatus,
}

impl StreamConsumer {
    /// A consumer (for implementations of [`crate::Kinesis`]).
    pub fn new(arn: impl Into<String>, name: impl Into<String>, status: ConsumerStatus) -> Self {
        StreamConsumer {
            arn: arn.into(),
            name: name.into(),
            status,
        }
    }
}

/// A stream consumer's status.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConsumerStatus {
    /// Being registered: subscriptions are refused until it is `Active`.
    Creating,
    /// Ready.
    Active,
    /// Being deregistered.
    Deleting,
    /// A status this version does not know.
    Other(String),
}

impl ConsumerStatus {
    pub(crate) fn parse(status: &str) -> Self {
        match status {
            "CREATING" => ConsumerStatus::Creating,
            "ACTIVE" => ConsumerStatus::Active,
            "DELETING" => ConsumerStatus::Deleting,
            other => ConsumerStatus::Other(other.to_owned()),
        }
    }
}

/// One event of a shard subscription.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscriptionEvent {
    /// Records, in order (possibly none: events also come when nothing is new).
    pub records: Vec<Record>,
    /// Where a new subscription continues after this event; `None` at the shard's end.
    pub continuation_sequence_number: Option<String>,
    /// How far behind the tip this event is.
    pub millis_behind_latest: Option<i64>,
    /// At the shard's end: its children.
    pub child_shards: Vec<ChildShard>,
}

impl SubscriptionEvent {
    /// An event (for implementations of [`crate::Kinesis`]).
    pub fn new(
        records: Vec<Record>,
        continuation_sequence_number: Option<String>,
        millis_behind_latest: Option<i64>,
        child_shards: Vec<ChildShard>,
    ) -> Self {
        SubscriptionEvent {
            records,
            continuation_sequence_number,
            millis_behind_latest,
            child_shards,
        }
    }

    /// Whether this is the shard's last event (no continuation: the shard is closed and read to
    /// its end).
    pub fn is_shard_end(&self) -> bool {
        self.continuation_sequence_number.is_none()
    }
}

/// A shard subscription (SubscribeToShard): its events, in order.
#[async_trait]
pub trait Subscription: std::fmt::Debug + Send {
    /// The next event; `None` when the subscription ended (after about five minutes, or at the
    /// shard's end); an error when it failed (another subscription to the shard is open:
    /// `ResourceInUseException`; the connection broke; ...).
    async fn next_event(&mut self) -> Option<Result<SubscriptionEvent, AwsError>>;
}

/// What an implementation without enhanced fan-out answers.
pub(crate) fn unsupported(operation: &'static str) -> AwsError {
    AwsError::new(
        operation,
        AwsErrorKind::Other {
            message: "this Kinesis implementation has no enhanced fan-out".to_owned(),
        },
    )
}
