//! [`Kinesis`] on `aws-sdk-kinesis`: the SDK's retries off (callers retry by class), each call
//! limited by a timeout, ListShards paged here, stream names and ARNs applied here.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_kinesis::primitives::{Blob, DateTime};
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType};
use kinesis_format::HashKeyRange;
use kinesis_retry::{AwsError, AwsErrorKind};

use crate::Kinesis;
use crate::stream::{StreamRef, with_stream};
use crate::types::{
    ChildShard, IteratorStart, PutEntry, PutResult, Record, RecordsPage, Shard, ShardFilter,
    StreamSummary,
};

/// Kinesis through the AWS SDK.
#[derive(Clone, Debug)]
pub struct SdkKinesis {
    client: aws_sdk_kinesis::Client,
}

impl SdkKinesis {
    /// Wraps `client`, replacing its retry and timeout settings: no SDK retries, and each call
    /// limited to `call_timeout`.
    pub fn new(client: &aws_sdk_kinesis::Client, call_timeout: Duration) -> Self {
        let (retries, timeouts) = kinesis_retry::sdk_call_settings(call_timeout);
        let config = client
            .config()
            .to_builder()
            .retry_config(retries)
            .timeout_config(timeouts)
            .build();
        SdkKinesis {
            client: aws_sdk_kinesis::Client::from_conf(config),
        }
    }
}

fn malformed(operation: &'static str, message: String) -> AwsError {
    AwsError::new(operation, AwsErrorKind::Other { message })
}

fn range(
    operation: &'static str,
    shard: &str,
    range: Option<&aws_sdk_kinesis::types::HashKeyRange>,
) -> Result<HashKeyRange, AwsError> {
    let r = range
        .ok_or_else(|| malformed(operation, format!("shard {shard} has no hash key range")))?;
    HashKeyRange::parse(r.starting_hash_key(), r.ending_hash_key())
        .map_err(|e| malformed(operation, format!("shard {shard}: {e}")))
}

fn system_time(t: &DateTime) -> Option<SystemTime> {
    SystemTime::try_from(*t).ok()
}

/// A record as the SDK returns it, in the project's type.
pub(crate) fn record(r: aws_sdk_kinesis::types::Record) -> Record {
    Record {
        approximate_arrival: r
            .approximate_arrival_timestamp
            .as_ref()
            .and_then(system_time),
        sequence_number: r.sequence_number,
        partition_key: r.partition_key,
        data: r.data.into_inner().into(),
    }
}

/// Child shards as the SDK returns them (a range that cannot be read is left out).
pub(crate) fn child_shards(
    operation: &'static str,
    children: Vec<aws_sdk_kinesis::types::ChildShard>,
) -> Vec<ChildShard> {
    children
        .into_iter()
        .map(|c| ChildShard {
            range: range(operation, &c.shard_id, c.hash_key_range.as_ref()).ok(),
            parents: c.parent_shards,
            id: c.shard_id,
        })
        .collect()
}

#[async_trait]
impl Kinesis for SdkKinesis {
    async fn describe_stream_summary(&self, stream: &StreamRef) -> Result<StreamSummary, AwsError> {
        const OP: &str = "Kinesis DescribeStreamSummary";
        let output = with_stream!(self.client.describe_stream_summary(), stream)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk(OP, e))?;
        let s = output
            .stream_description_summary()
            .ok_or_else(|| malformed(OP, "no stream description".into()))?;
        Ok(StreamSummary {
            name: s.stream_name().to_owned(),
            arn: s.stream_arn().to_owned(),
            created_epoch_seconds: s.stream_creation_timestamp().secs(),
            max_record_size_kib: s.max_record_size_in_kib(),
        })
    }

    async fn list_shards(
        &self,
        stream: &StreamRef,
        filter: ShardFilter,
    ) -> Result<Vec<Shard>, AwsError> {
        const OP: &str = "Kinesis ListShards";
        let mut shards = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let request = match token.take() {
                // Later pages carry only the token: the API refuses it with a stream.
                Some(t) => self.client.list_shards().next_token(t),
                None => {
                    let request = with_stream!(self.client.list_shards(), stream);
                    match filter {
                        ShardFilter::All => request,
                        ShardFilter::Open => request.shard_filter(
                            aws_sdk_kinesis::types::ShardFilter::builder()
                                .r#type(aws_sdk_kinesis::types::ShardFilterType::AtLatest)
                                .build()
                                .map_err(|e| malformed(OP, e.to_string()))?,
                        ),
                    }
                }
            };
            let page = request
                .send()
                .await
                .map_err(|e| AwsError::from_sdk(OP, e))?;
            for s in page.shards.unwrap_or_default() {
                shards.push(Shard {
                    range: range(OP, &s.shard_id, s.hash_key_range.as_ref())?,
                    parents: s
                        .parent_shard_id
                        .into_iter()
                        .chain(s.adjacent_parent_shard_id)
                        .collect(),
                    closed: s
                        .sequence_number_range
                        .as_ref()
                        .is_some_and(|r| r.ending_sequence_number().is_some()),
                    id: s.shard_id,
                });
            }
            match page.next_token {
                Some(t) => token = Some(t),
                None => return Ok(shards),
            }
        }
    }

    async fn get_shard_iterator(
        &self,
        stream: &StreamRef,
        shard_id: &str,
        start: &IteratorStart,
    ) -> Result<String, AwsError> {
        const OP: &str = "Kinesis GetShardIterator";
        let request = with_stream!(self.client.get_shard_iterator(), stream).shard_id(shard_id);
        let request = match start {
            IteratorStart::TrimHorizon => {
                request.shard_iterator_type(ShardIteratorType::TrimHorizon)
            }
            IteratorStart::Latest => request.shard_iterator_type(ShardIteratorType::Latest),
            IteratorStart::AtTimestamp(at) => request
                .shard_iterator_type(ShardIteratorType::AtTimestamp)
                .timestamp(DateTime::from(*at)),
            IteratorStart::AtSequence(seq) => request
                .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                .starting_sequence_number(seq),
            IteratorStart::AfterSequence(seq) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(seq),
        };
        let output = request
            .send()
            .await
            .map_err(|e| AwsError::from_sdk(OP, e))?;
        output
            .shard_iterator
            .ok_or_else(|| malformed(OP, format!("no iterator for {shard_id}")))
    }

    async fn get_records(&self, iterator: &str, limit: i32) -> Result<RecordsPage, AwsError> {
        const OP: &str = "Kinesis GetRecords";
        let output = self
            .client
            .get_records()
            .shard_iterator(iterator)
            .limit(limit)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk(OP, e))?;
        let child_shards = child_shards(OP, output.child_shards.unwrap_or_default());
        Ok(RecordsPage {
            records: output.records.into_iter().map(record).collect(),
            next_iterator: output.next_shard_iterator,
            millis_behind_latest: output.millis_behind_latest,
            child_shards,
        })
    }

    async fn put_records(
        &self,
        stream: &StreamRef,
        entries: Vec<PutEntry>,
    ) -> Result<Vec<PutResult>, AwsError> {
        const OP: &str = "Kinesis PutRecords";
        let records: Vec<PutRecordsRequestEntry> = entries
            .into_iter()
            .map(|e| {
                PutRecordsRequestEntry::builder()
                    .partition_key(e.partition_key)
                    .set_explicit_hash_key(e.explicit_hash_key)
                    .data(Blob::new(Vec::from(e.data)))
                    .build()
                    .map_err(|e| malformed(OP, e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        let output = with_stream!(self.client.put_records(), stream)
            .set_records(Some(records))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk(OP, e))?;
        Ok(output
            .records
            .into_iter()
            .map(|r| match (r.shard_id, r.sequence_number, r.error_code) {
                (Some(shard_id), Some(sequence_number), None) => PutResult::Stored {
                    shard_id,
                    sequence_number,
                },
                (_, _, code) => PutResult::Failed {
                    code: code.unwrap_or_else(|| "MissingResult".into()),
                    message: r.error_message.unwrap_or_default(),
                },
            })
            .collect())
    }

    async fn register_stream_consumer(
        &self,
        stream_arn: &str,
        name: &str,
    ) -> Result<crate::StreamConsumer, AwsError> {
        crate::sdk_fan_out::register(&self.client, stream_arn, name).await
    }

    async fn describe_stream_consumer(
        &self,
        stream_arn: &str,
        name: &str,
    ) -> Result<crate::StreamConsumer, AwsError> {
        crate::sdk_fan_out::describe(&self.client, stream_arn, name).await
    }

    async fn subscribe_to_shard(
        &self,
        consumer_arn: &str,
        shard_id: &str,
        start: &IteratorStart,
    ) -> Result<Box<dyn crate::Subscription>, AwsError> {
        crate::sdk_fan_out::subscribe(&self.client, consumer_arn, shard_id, start).await
    }
}
