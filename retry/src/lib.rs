//! What a failed AWS call means, and how long to wait before the next try, in one place for the
//! producer (`kpl`) and the consumer (`kcl`):
//!
//! - [`Class`]: every failure is *throttled* (retry later, slow down), *transient* (retry after a
//!   back-off) or *fatal* (retrying cannot help: stop and say what to fix). [`classify`] decides
//!   from the service's error code and HTTP status; timeouts and connection failures are transient.
//! - [`Backoff`]: a validated, capped exponential back-off with full jitter and an injected RNG.
//! - [`AwsError`]: an AWS SDK error (Kinesis or DynamoDB) reduced to what callers decide on
//!   (operation, code, status, class), keeping the SDK error as its [`source`](std::error::Error::source).
//! - [`retry`]: the one retry loop, driven by the classifier.

mod aws_error;
mod backoff;
mod class;
mod retry_loop;

pub use aws_error::{AwsError, AwsErrorKind};
pub use backoff::{Backoff, BackoffConfig, BackoffConfigError};
pub use class::{Class, classify, classify_code};
pub use retry_loop::{RetryPolicy, retry, retry_notify, retry_with_rng};

/// The SDK settings every client of this workspace uses: the SDK's own retries off (the caller
/// retries by [`Class`], so retries do not multiply), each call and each attempt limited to
/// `timeout`, and connecting to at most 3 s of it. Apply with a service config builder's
/// `retry_config` and `timeout_config`.
pub fn sdk_call_settings(
    timeout: std::time::Duration,
) -> (
    aws_smithy_types::retry::RetryConfig,
    aws_smithy_types::timeout::TimeoutConfig,
) {
    (
        aws_smithy_types::retry::RetryConfig::disabled(),
        aws_smithy_types::timeout::TimeoutConfig::builder()
            .operation_timeout(timeout)
            .operation_attempt_timeout(timeout)
            .connect_timeout(timeout.min(std::time::Duration::from_secs(3)))
            .build(),
    )
}
