//! An AWS SDK error (Kinesis or DynamoDB) reduced to what a caller decides on, with the SDK's
//! error kept as the source: the operation, the service's code and message, the HTTP status, and
//! the [`Class`] that says whether to retry.

use std::error::Error as StdError;
use std::fmt;

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::class::{Class, classify};

/// What went wrong with a call.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AwsErrorKind {
    /// No answer within the call's timeout. The service may still have done it.
    Timeout,
    /// The connection failed (refused, reset, DNS) or the answer could not be read.
    Connection {
        /// What the HTTP client said.
        message: String,
    },
    /// The service answered with an error.
    Service {
        /// The error code (`ResourceNotFoundException`, ...).
        code: String,
        /// The service's message.
        message: String,
        /// The HTTP status.
        status: Option<u16>,
    },
    /// The request could not be built or sent (a bug or a bad setting, never retried).
    Other {
        /// What the SDK said.
        message: String,
    },
}

/// A failed AWS call.
#[derive(Debug)]
pub struct AwsError {
    operation: &'static str,
    /// Boxed: errors travel inside other errors' `Result`s, which stay small.
    kind: Box<AwsErrorKind>,
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

impl AwsError {
    /// An error without an underlying SDK error (our own timeout, a test's fault).
    pub fn new(operation: &'static str, kind: AwsErrorKind) -> Self {
        AwsError {
            operation,
            kind: Box::new(kind),
            source: None,
        }
    }

    /// A call that got no answer in time.
    pub fn timeout(operation: &'static str) -> Self {
        Self::new(operation, AwsErrorKind::Timeout)
    }

    /// From an SDK error of `operation` (say `"DynamoDB UpdateItem"`), keeping it as the source.
    pub fn from_sdk<E>(operation: &'static str, err: SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    {
        let status = match &err {
            SdkError::ServiceError(s) => Some(s.raw().status().as_u16()),
            _ => None,
        };
        Self::reduce(operation, err, status, None, |r| {
            format!(
                "the answer could not be read (HTTP {})",
                r.status().as_u16()
            )
        })
    }

    /// From an error of an event stream (SubscribeToShard's events): the same reduction, without
    /// an HTTP status (the events arrive on an answer already under way). `code` is the error's
    /// code where the SDK's metadata lacks it (it does for modelled event-stream exceptions).
    pub fn from_sdk_event<E, R>(
        operation: &'static str,
        err: SdkError<E, R>,
        code: Option<&'static str>,
    ) -> Self
    where
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
        R: fmt::Debug + Send + Sync + 'static,
    {
        Self::reduce(operation, err, None, code, |_| {
            "an event could not be read".to_owned()
        })
    }

    /// The one reduction of an SDK error: timeouts, connection failures (`unreadable` describes
    /// an answer that could not be read), the service's code (`code` where the metadata has
    /// none), message and `status`.
    fn reduce<E, R>(
        operation: &'static str,
        err: SdkError<E, R>,
        status: Option<u16>,
        code: Option<&'static str>,
        unreadable: impl FnOnce(&R) -> String,
    ) -> Self
    where
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
        R: fmt::Debug + Send + Sync + 'static,
    {
        let kind = match &err {
            SdkError::TimeoutError(_) => AwsErrorKind::Timeout,
            SdkError::DispatchFailure(f) if f.is_timeout() => AwsErrorKind::Timeout,
            SdkError::DispatchFailure(f) => AwsErrorKind::Connection {
                message: match f.as_connector_error() {
                    Some(c) => DisplayErrorContext(c).to_string(),
                    None => "dispatch failure".to_owned(),
                },
            },
            SdkError::ResponseError(r) => AwsErrorKind::Connection {
                message: unreadable(r.raw()),
            },
            SdkError::ServiceError(s) => AwsErrorKind::Service {
                code: s.err().code().or(code).unwrap_or("Unknown").to_owned(),
                message: s.err().message().unwrap_or_default().to_owned(),
                status,
            },
            other => AwsErrorKind::Other {
                message: DisplayErrorContext(other).to_string(),
            },
        };
        AwsError {
            operation,
            kind: Box::new(kind),
            source: Some(Box::new(err)),
        }
    }

    /// The operation, as `"Service Operation"`.
    pub fn operation(&self) -> &'static str {
        self.operation
    }

    /// What went wrong.
    pub fn kind(&self) -> &AwsErrorKind {
        &self.kind
    }

    /// The service's error code, when the service answered.
    pub fn code(&self) -> Option<&str> {
        match &*self.kind {
            AwsErrorKind::Service { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether the service answered with this code.
    pub fn is_code(&self, code: &str) -> bool {
        self.code() == Some(code)
    }

    /// Whether the resource (stream, shard, table) does not exist.
    pub fn is_not_found(&self) -> bool {
        self.is_code("ResourceNotFoundException")
    }

    /// Throttled, transient or fatal.
    pub fn class(&self) -> Class {
        match &*self.kind {
            AwsErrorKind::Timeout | AwsErrorKind::Connection { .. } => Class::Transient,
            AwsErrorKind::Service { code, status, .. } => classify(code, *status),
            AwsErrorKind::Other { .. } => Class::Fatal,
        }
    }
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = self.operation;
        match &*self.kind {
            AwsErrorKind::Timeout => write!(f, "{op}: no answer within the call's timeout"),
            AwsErrorKind::Connection { message } => write!(f, "{op}: connection failed: {message}"),
            AwsErrorKind::Service {
                code,
                message,
                status,
            } => {
                write!(f, "{op}: {code}")?;
                if !message.is_empty() {
                    write!(f, ": {message}")?;
                }
                if let Some(s) = status {
                    write!(f, " (HTTP {s})")?;
                }
                Ok(())
            }
            AwsErrorKind::Other { message } => write!(f, "{op}: {message}"),
        }
    }
}

impl StdError for AwsError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_messages() {
        let service = |code: &str, status| {
            AwsError::new(
                "Kinesis GetRecords",
                AwsErrorKind::Service {
                    code: code.into(),
                    message: "said the service".into(),
                    status: Some(status),
                },
            )
        };
        assert_eq!(AwsError::timeout("x").class(), Class::Transient);
        assert_eq!(service("InternalFailure", 500).class(), Class::Transient);
        assert_eq!(
            service("ProvisionedThroughputExceededException", 400).class(),
            Class::Throttled
        );
        let gone = service("ResourceNotFoundException", 400);
        assert_eq!(gone.class(), Class::Fatal);
        assert!(gone.is_not_found());
        assert_eq!(
            gone.to_string(),
            "Kinesis GetRecords: ResourceNotFoundException: said the service (HTTP 400)"
        );
        assert!(gone.source().is_none());
    }
}
