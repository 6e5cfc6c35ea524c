//! The one boundary to Kinesis for the producer (`kpl`) and the consumer (`kcl`): the
//! [`Kinesis`] trait, with the project's own types ([`Shard`], [`ChildShard`], [`Record`], ...)
//! so that the cores never see SDK types, and [`SdkKinesis`], its implementation on
//! `aws-sdk-kinesis`. Failures are [`kinesis_retry::AwsError`]s: one classification (throttled /
//! transient / fatal) for every caller.
//!
//! The trait makes single calls (ListShards: all pages); callers retry by class. Stream names and
//! ARNs ([`StreamRef`]) and ListShards pagination are handled here and nowhere else.

mod fan_out;
#[cfg(feature = "memory")]
pub mod memory;
mod sdk;
mod sdk_fan_out;
mod stream;
mod types;

use async_trait::async_trait;
pub use kinesis_retry::AwsError;

pub use fan_out::{ConsumerStatus, StreamConsumer, Subscription, SubscriptionEvent};
pub use sdk::SdkKinesis;
pub use stream::StreamRef;
pub use types::{
    ChildShard, IteratorStart, PutEntry, PutResult, Record, RecordsPage, Shard, ShardFilter,
    StreamSummary,
};

/// The Kinesis calls the producer and the consumer make.
#[async_trait]
pub trait Kinesis: std::fmt::Debug + Send + Sync + 'static {
    /// The stream's identity and limits (DescribeStreamSummary).
    async fn describe_stream_summary(&self, stream: &StreamRef) -> Result<StreamSummary, AwsError>;

    /// The stream's shards, all pages (ListShards).
    async fn list_shards(
        &self,
        stream: &StreamRef,
        filter: ShardFilter,
    ) -> Result<Vec<Shard>, AwsError>;

    /// An iterator into one shard (GetShardIterator).
    async fn get_shard_iterator(
        &self,
        stream: &StreamRef,
        shard_id: &str,
        start: &IteratorStart,
    ) -> Result<String, AwsError>;

    /// Up to `limit` records from an iterator (GetRecords). An expired iterator is the error
    /// code `ExpiredIteratorException`.
    async fn get_records(&self, iterator: &str, limit: i32) -> Result<RecordsPage, AwsError>;

    /// One PutRecords call; results in request order.
    async fn put_records(
        &self,
        stream: &StreamRef,
        entries: Vec<PutEntry>,
    ) -> Result<Vec<PutResult>, AwsError>;

    /// Registers an enhanced fan-out consumer named `name` on the stream
    /// (RegisterStreamConsumer); `ResourceInUseException` when one by that name exists. It is
    /// `Creating` at first: subscribe once [`describe_stream_consumer`](Self::describe_stream_consumer)
    /// says `Active`. Without enhanced fan-out (the default), an error.
    async fn register_stream_consumer(
        &self,
        stream_arn: &str,
        name: &str,
    ) -> Result<StreamConsumer, AwsError> {
        let _ = (stream_arn, name);
        Err(fan_out::unsupported("Kinesis RegisterStreamConsumer"))
    }

    /// The consumer named `name` on the stream (DescribeStreamConsumer);
    /// `ResourceNotFoundException` when there is none.
    async fn describe_stream_consumer(
        &self,
        stream_arn: &str,
        name: &str,
    ) -> Result<StreamConsumer, AwsError> {
        let _ = (stream_arn, name);
        Err(fan_out::unsupported("Kinesis DescribeStreamConsumer"))
    }

    /// Subscribes `consumer_arn` to one shard from `start` (SubscribeToShard): events are pushed
    /// for up to five minutes. At most one subscription per consumer and shard at a time, and a
    /// new one at most once a second per consumer and shard.
    async fn subscribe_to_shard(
        &self,
        consumer_arn: &str,
        shard_id: &str,
        start: &IteratorStart,
    ) -> Result<Box<dyn Subscription>, AwsError> {
        let _ = (consumer_arn, shard_id, start);
        Err(fan_out::unsupported("Kinesis SubscribeToShard"))
    }
}
