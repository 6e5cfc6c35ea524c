//! A stream named by name or by ARN, as the Kinesis API accepts either.

/// The stream a worker consumes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamRef(pub(crate) String);

impl StreamRef {
    /// A stream by name, or by ARN when it starts with `arn:`.
    pub fn new(name_or_arn: impl Into<String>) -> Self {
        StreamRef(name_or_arn.into())
    }

    pub(crate) fn is_arn(&self) -> bool {
        self.0.starts_with("arn:")
    }

    /// The name or ARN as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Applies a stream reference to any request builder that takes a stream name or ARN.
macro_rules! with_stream {
    ($request:expr, $stream:expr) => {{
        let stream: &$crate::stream::StreamRef = $stream;
        if stream.is_arn() {
            $request.stream_arn(stream.as_str())
        } else {
            $request.stream_name(stream.as_str())
        }
    }};
}
pub(crate) use with_stream;
