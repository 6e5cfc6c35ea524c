//! Enhanced fan-out through `aws-sdk-kinesis`: consumer registration and SubscribeToShard's event
//! stream, in the project's types.

use async_trait::async_trait;
use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::primitives::event_stream::EventReceiver;
use aws_sdk_kinesis::types::error::SubscribeToShardEventStreamError;
use aws_sdk_kinesis::types::{ShardIteratorType, StartingPosition, SubscribeToShardEventStream};
use kinesis_retry::AwsError;

use crate::fan_out::{ConsumerStatus, StreamConsumer, Subscription, SubscriptionEvent};
use crate::sdk::{child_shards, record};
use crate::types::IteratorStart;

const SUBSCRIPTION: &str = "Kinesis SubscribeToShard";

fn malformed(operation: &'static str, message: &str) -> AwsError {
    AwsError::new(
        operation,
        kinesis_retry::AwsErrorKind::Other {
            message: message.to_owned(),
        },
    )
}

/// A consumer as the SDK describes it, in either answer's shape.
fn consumer(
    arn: String,
    name: String,
    status: &aws_sdk_kinesis::types::ConsumerStatus,
) -> StreamConsumer {
    StreamConsumer::new(arn, name, ConsumerStatus::parse(status.as_str()))
}

pub(crate) async fn register(
    client: &aws_sdk_kinesis::Client,
    stream_arn: &str,
    name: &str,
) -> Result<StreamConsumer, AwsError> {
    const OP: &str = "Kinesis RegisterStreamConsumer";
    let output = client
        .register_stream_consumer()
        .stream_arn(stream_arn)
        .consumer_name(name)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk(OP, e))?;
    let c = output
        .consumer
        .ok_or_else(|| malformed(OP, "no consumer in the answer"))?;
    Ok(consumer(
        c.consumer_arn,
        c.consumer_name,
        &c.consumer_status,
    ))
}

pub(crate) async fn describe(
    client: &aws_sdk_kinesis::Client,
    stream_arn: &str,
    name: &str,
) -> Result<StreamConsumer, AwsError> {
    const OP: &str = "Kinesis DescribeStreamConsumer";
    let output = client
        .describe_stream_consumer()
        .stream_arn(stream_arn)
        .consumer_name(name)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk(OP, e))?;
    let c = output
        .consumer_description
        .ok_or_else(|| malformed(OP, "no consumer description in the answer"))?;
    Ok(consumer(
        c.consumer_arn,
        c.consumer_name,
        &c.consumer_status,
    ))
}

pub(crate) async fn subscribe(
    client: &aws_sdk_kinesis::Client,
    consumer_arn: &str,
    shard_id: &str,
    start: &IteratorStart,
) -> Result<Box<dyn Subscription>, AwsError> {
    let position = match start {
        IteratorStart::TrimHorizon => {
            StartingPosition::builder().r#type(ShardIteratorType::TrimHorizon)
        }
        IteratorStart::Latest => StartingPosition::builder().r#type(ShardIteratorType::Latest),
        IteratorStart::AtTimestamp(at) => StartingPosition::builder()
            .r#type(ShardIteratorType::AtTimestamp)
            .timestamp(DateTime::from(*at)),
        IteratorStart::AtSequence(seq) => StartingPosition::builder()
            .r#type(ShardIteratorType::AtSequenceNumber)
            .sequence_number(seq),
        IteratorStart::AfterSequence(seq) => StartingPosition::builder()
            .r#type(ShardIteratorType::AfterSequenceNumber)
            .sequence_number(seq),
    }
    .build()
    .map_err(|e| malformed(SUBSCRIPTION, &e.to_string()))?;
    let output = client
        .subscribe_to_shard()
        .consumer_arn(consumer_arn)
        .shard_id(shard_id)
        .starting_position(position)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk(SUBSCRIPTION, e))?;
    Ok(Box::new(SdkSubscription {
        events: output.event_stream,
        done: false,
    }))
}

/// SubscribeToShard's event stream.
#[derive(Debug)]
struct SdkSubscription {
    events: EventReceiver<SubscribeToShardEventStream, SubscribeToShardEventStreamError>,
    done: bool,
}

#[async_trait]
impl Subscription for SdkSubscription {
    async fn next_event(&mut self) -> Option<Result<SubscriptionEvent, AwsError>> {
        while !self.done {
            match self.events.recv().await {
                Ok(Some(SubscribeToShardEventStream::SubscribeToShardEvent(e))) => {
                    // The model says the continuation is always there; at a shard's end the
                    // service sends none (read as empty).
                    let continuation =
                        Some(e.continuation_sequence_number).filter(|c| !c.is_empty());
                    return Some(Ok(SubscriptionEvent::new(
                        e.records.into_iter().map(record).collect(),
                        continuation,
                        Some(e.millis_behind_latest),
                        child_shards(SUBSCRIPTION, e.child_shards.unwrap_or_default()),
                    )));
                }
                // An event type this SDK does not know: skip it.
                Ok(Some(_)) => {}
                Ok(None) => self.done = true,
                Err(e) => {
                    self.done = true;
                    let code = match &e {
                        aws_sdk_kinesis::error::SdkError::ServiceError(s) => code_of(s.err()),
                        _ => None,
                    };
                    return Some(Err(AwsError::from_sdk_event(SUBSCRIPTION, e, code)));
                }
            }
        }
        None
    }
}

/// The code of a modelled event-stream exception (the SDK leaves its metadata's code empty).
fn code_of(e: &SubscribeToShardEventStreamError) -> Option<&'static str> {
    use SubscribeToShardEventStreamError as E;
    Some(match e {
        E::ResourceNotFoundException(_) => "ResourceNotFoundException",
        E::ResourceInUseException(_) => "ResourceInUseException",
        E::KmsDisabledException(_) => "KMSDisabledException",
        E::KmsInvalidStateException(_) => "KMSInvalidStateException",
        E::KmsAccessDeniedException(_) => "KMSAccessDeniedException",
        E::KmsNotFoundException(_) => "KMSNotFoundException",
        E::KmsOptInRequired(_) => "KMSOptInRequired",
        E::KmsThrottlingException(_) => "KMSThrottlingException",
        E::InternalFailureException(_) => "InternalFailureException",
        _ => return None,
    })
}
