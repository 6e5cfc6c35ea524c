//! The retry classifier: throttled / transient / fatal, from an error code and an HTTP status.

/// What a failure means for whoever made the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// A passing fault (timeout, connection reset, 5xx): retry after a back-off.
    Transient,
    /// Over a limit (shard, table, account, KMS): retry after a back-off, and slow down.
    Throttled,
    /// Retrying cannot help (missing resource, bad request, no permission): stop and report.
    Fatal,
}

/// Codes that mean "over a limit" in Kinesis, DynamoDB, KMS and the AWS SDKs.
const THROTTLING_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "LimitExceededException",
    "KMSThrottlingException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "SlowDown",
];

/// Codes that no retry can fix.
const FATAL_CODES: &[&str] = &[
    "ResourceNotFoundException",
    "ValidationException",
    "InvalidArgumentException",
    "AccessDeniedException",
    "AccessDeniedExceptionReason",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "ExpiredTokenException",
    "KMSDisabledException",
    "KMSInvalidStateException",
    "KMSAccessDeniedException",
    "KMSNotFoundException",
    "KMSOptInRequired",
    "SerializationException",
    "ConditionalCheckFailedException",
];

/// Classifies an error code alone (say, one failed entry of a PutRecords call). Unknown codes
/// are transient: a new service-side failure should not lose data.
pub fn classify_code(code: &str) -> Class {
    if THROTTLING_CODES.contains(&code) {
        Class::Throttled
    } else if FATAL_CODES.contains(&code) {
        Class::Fatal
    } else {
        Class::Transient
    }
}

/// Classifies a service error from its code and HTTP status: known codes first; otherwise 429 is
/// throttling, 408 and 5xx are transient, and any other 4xx is the request's own fault (fatal).
pub fn classify(code: &str, status: Option<u16>) -> Class {
    match classify_code(code) {
        Class::Transient => match status {
            Some(429) => Class::Throttled,
            Some(408) => Class::Transient,
            Some(s) if (400..500).contains(&s) => Class::Fatal,
            _ => Class::Transient,
        },
        class => class,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(
            classify_code("ProvisionedThroughputExceededException"),
            Class::Throttled
        );
        assert_eq!(classify_code("KMSThrottlingException"), Class::Throttled);
        assert_eq!(classify_code("KMSAccessDeniedException"), Class::Fatal);
        assert_eq!(classify_code("InternalFailure"), Class::Transient);
        assert_eq!(classify_code("SomethingNew"), Class::Transient);
    }

    #[test]
    fn codes_with_statuses() {
        assert_eq!(classify("InternalFailure", Some(500)), Class::Transient);
        assert_eq!(classify("Whatever", Some(503)), Class::Transient);
        assert_eq!(classify("Whatever", None), Class::Transient);
        assert_eq!(
            classify("ResourceNotFoundException", Some(400)),
            Class::Fatal
        );
        assert_eq!(classify("AccessDeniedException", Some(400)), Class::Fatal);
        assert_eq!(classify("NewClientError", Some(400)), Class::Fatal);
        assert_eq!(classify("Unknown", Some(429)), Class::Throttled);
        assert_eq!(classify("Unknown", Some(408)), Class::Transient);
        assert_eq!(
            classify("LimitExceededException", Some(400)),
            Class::Throttled
        );
    }
}
