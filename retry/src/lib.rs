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
pub use retry_loop::{RetryPolicy, retry, retry_with_rng};
