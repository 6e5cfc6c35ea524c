//! The producer's seam to Kinesis: PutRecords and ListShards behind a small private trait, so the
//! pipeline's tests drive it with a scripted mock. Its one real implementation is the shared
//! boundary (`kinesis-api`: the SDK, ListShards paging, stream names and ARNs), whose
//! `AwsError`s are turned into the pipeline's [`CallError`]s here.

use std::sync::Arc;

use async_trait::async_trait;
use kinesis_api::{Kinesis, ShardFilter, StreamRef};
use kinesis_format::HashKeyRange;
use kinesis_retry::{AwsError, AwsErrorKind};

/// One Kinesis record of a PutRecords call, and the result of one entry (in request order): the
/// boundary's own types, passed through without conversion.
pub(crate) use kinesis_api::{PutEntry, PutResult as EntryResult};

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

    fn from_aws(err: AwsError) -> CallError {
        match err.kind() {
            AwsErrorKind::Timeout => CallError::Timeout,
            AwsErrorKind::Connection { message } => CallError::Connection(message.clone()),
            AwsErrorKind::Service {
                code,
                message,
                status,
            } => CallError::Service {
                code: code.clone(),
                message: message.clone(),
                status: *status,
            },
            other => CallError::Other(format!("{other:?}")),
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

    /// The stream's maximum record size in bytes (DescribeStreamSummary's
    /// `MaxRecordSizeInKiB`); `None` where the endpoint does not report it.
    async fn max_record_size(&self, stream: &str) -> Result<Option<usize>, CallError>;
}

/// The shared boundary, as the pipeline's seam.
#[derive(Clone, Debug)]
pub(crate) struct Boundary(pub(crate) Arc<dyn Kinesis>);

#[async_trait]
impl KinesisApi for Boundary {
    async fn put_records(
        &self,
        stream: &str,
        entries: Vec<PutEntry>,
    ) -> Result<Vec<EntryResult>, CallError> {
        self.0
            .put_records(&StreamRef::new(stream), entries)
            .await
            .map_err(CallError::from_aws)
    }

    async fn list_shards(
        &self,
        stream: &str,
        open_only: bool,
    ) -> Result<Vec<ShardInfo>, CallError> {
        let filter = if open_only {
            ShardFilter::Open
        } else {
            ShardFilter::All
        };
        let shards = self
            .0
            .list_shards(&StreamRef::new(stream), filter)
            .await
            .map_err(CallError::from_aws)?;
        Ok(shards
            .into_iter()
            .map(|s| ShardInfo {
                shard_id: s.id,
                range: s.range,
            })
            .collect())
    }

    async fn max_record_size(&self, stream: &str) -> Result<Option<usize>, CallError> {
        let summary = self
            .0
            .describe_stream_summary(&StreamRef::new(stream))
            .await
            .map_err(CallError::from_aws)?;
        Ok(summary
            .max_record_size_kib
            .and_then(|kib| usize::try_from(kib).ok())
            .filter(|kib| *kib > 0)
            .map(|kib| kib * 1024))
    }
}
