//! The producer's one boundary to Kinesis: PutRecords and ListShards, behind a trait so the
//! pipeline does not depend on the SDK's types, with the SDK implementation.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardFilter, ShardFilterType};
use bytes::Bytes;
use kinesis_format::HashKeyRange;

/// One Kinesis record of a PutRecords call.
#[derive(Clone, Debug)]
pub(crate) struct PutEntry {
    pub(crate) partition_key: String,
    pub(crate) explicit_hash_key: Option<String>,
    pub(crate) data: Bytes,
}

/// The result of one entry of a PutRecords call, in request order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum EntryResult {
    Stored {
        shard_id: String,
        sequence_number: String,
    },
    Failed {
        code: String,
        message: String,
    },
}

/// A shard as the producer needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ShardInfo {
    pub(crate) shard_id: String,
    pub(crate) range: HashKeyRange,
}

/// Why a whole call failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CallError {
    /// No answer within the request timeout.
    Timeout,
    /// The connection failed (refused, reset, DNS...).
    Connection(String),
    /// The service answered with an error.
    Service {
        code: String,
        message: String,
        status: Option<u16>,
    },
    /// Anything else (a malformed response, a request that could not be built).
    Other(String),
}

impl CallError {
    pub(crate) fn code(&self) -> &str {
        match self {
            CallError::Timeout => "Timeout",
            CallError::Connection(_) => "Connection",
            CallError::Service { code, .. } => code,
            CallError::Other(_) => "Other",
        }
    }

    pub(crate) fn message(&self) -> String {
        match self {
            CallError::Timeout => "no answer within request_timeout".into(),
            CallError::Connection(m) | CallError::Other(m) => m.clone(),
            CallError::Service { message, .. } => message.clone(),
        }
    }

    fn from_sdk<E: ProvideErrorMetadata + std::error::Error + 'static>(
        err: SdkError<E, aws_sdk_kinesis::config::http::HttpResponse>,
    ) -> CallError {
        match &err {
            SdkError::TimeoutError(_) => CallError::Timeout,
            SdkError::DispatchFailure(f) => {
                if f.is_timeout() {
                    CallError::Timeout
                } else {
                    CallError::Connection(format!("{:?}", f.as_connector_error()))
                }
            }
            SdkError::ResponseError(r) => CallError::Connection(format!(
                "malformed response (status {})",
                r.raw().status().as_u16()
            )),
            SdkError::ServiceError(s) => CallError::Service {
                code: s.err().code().unwrap_or("Unknown").to_owned(),
                message: s.err().message().unwrap_or_default().to_owned(),
                status: Some(s.raw().status().as_u16()),
            },
            _ => CallError::Other(format!("{err:?}")),
        }
    }
}

/// PutRecords and ListShards.
#[async_trait]
pub(crate) trait KinesisApi: Send + Sync + 'static {
    /// One PutRecords call; results in request order.
    async fn put_records(
        &self,
        stream: &str,
        entries: Vec<PutEntry>,
    ) -> Result<Vec<EntryResult>, CallError>;

    /// Every shard (`open_only`: ShardFilter AT_LATEST), all pages.
    async fn list_shards(&self, stream: &str, open_only: bool)
    -> Result<Vec<ShardInfo>, CallError>;
}

/// The SDK implementation. The client it wraps has the SDK's own retries turned off and an
/// operation timeout of `request_timeout`: the pipeline alone decides about retries.
#[derive(Clone, Debug)]
pub(crate) struct SdkKinesis {
    client: aws_sdk_kinesis::Client,
}

impl SdkKinesis {
    pub(crate) fn new(client: &aws_sdk_kinesis::Client, request_timeout: Duration) -> Self {
        let (retries, timeouts) = kinesis_retry::sdk_call_settings(request_timeout);
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

fn is_arn(stream: &str) -> bool {
    stream.starts_with("arn:")
}

#[async_trait]
impl KinesisApi for SdkKinesis {
    async fn put_records(
        &self,
        stream: &str,
        entries: Vec<PutEntry>,
    ) -> Result<Vec<EntryResult>, CallError> {
        let records: Vec<PutRecordsRequestEntry> = entries
            .into_iter()
            .map(|e| {
                PutRecordsRequestEntry::builder()
                    .partition_key(e.partition_key)
                    .set_explicit_hash_key(e.explicit_hash_key)
                    .data(Blob::new(Vec::from(e.data)))
                    .build()
                    .map_err(|e| CallError::Other(e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        let request = self.client.put_records().set_records(Some(records));
        let request = if is_arn(stream) {
            request.stream_arn(stream)
        } else {
            request.stream_name(stream)
        };
        let output = request.send().await.map_err(CallError::from_sdk)?;
        Ok(output
            .records
            .into_iter()
            .map(|r| match (r.shard_id, r.sequence_number, r.error_code) {
                (Some(shard_id), Some(sequence_number), None) => EntryResult::Stored {
                    shard_id,
                    sequence_number,
                },
                (_, _, code) => EntryResult::Failed {
                    code: code.unwrap_or_else(|| "MissingResult".into()),
                    message: r.error_message.unwrap_or_default(),
                },
            })
            .collect())
    }

    async fn list_shards(
        &self,
        stream: &str,
        open_only: bool,
    ) -> Result<Vec<ShardInfo>, CallError> {
        let mut shards = Vec::new();
        let mut next_token: Option<String> = None;
        loop {
            let request = match next_token.take() {
                // Later pages carry only the token (the API rejects it with a stream).
                Some(token) => self.client.list_shards().next_token(token),
                None => {
                    let r = self.client.list_shards();
                    let r = if is_arn(stream) {
                        r.stream_arn(stream)
                    } else {
                        r.stream_name(stream)
                    };
                    if open_only {
                        r.shard_filter(
                            ShardFilter::builder()
                                .r#type(ShardFilterType::AtLatest)
                                .build()
                                .map_err(|e| CallError::Other(e.to_string()))?,
                        )
                    } else {
                        r
                    }
                }
            };
            let page = request.send().await.map_err(CallError::from_sdk)?;
            for shard in page.shards.unwrap_or_default() {
                let Some(range) = shard.hash_key_range else {
                    continue;
                };
                let range = HashKeyRange::parse(range.starting_hash_key(), range.ending_hash_key())
                    .map_err(|e| CallError::Other(format!("shard {}: {e}", shard.shard_id)))?;
                shards.push(ShardInfo {
                    shard_id: shard.shard_id,
                    range,
                });
            }
            match page.next_token {
                Some(token) => next_token = Some(token),
                None => return Ok(shards),
            }
        }
    }
}
