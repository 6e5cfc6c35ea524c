//! The one place that decides what a failure means: retry soon (transient), retry later and slow
//! the shard down (throttled), or give up (fatal). Also the back-off between retries.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use rand::Rng;

use crate::kinesis::CallError;

/// What a failure means for the records it hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// Retry after a back-off.
    Transient,
    /// The shard (or account) is over its limits: retry after a back-off, and slow down.
    Throttled,
    /// Retrying cannot help: fail the records now.
    Fatal,
}

const THROTTLING_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "Throttling",
    "LimitExceededException",
    "KMSThrottlingException",
    "RequestLimitExceeded",
    "SlowDown",
];

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
    "KMSDisabledException",
    "KMSInvalidStateException",
    "KMSAccessDeniedException",
    "KMSNotFoundException",
    "KMSOptInRequired",
    "SerializationException",
];

/// Classifies the error code of one failed PutRecords entry.
pub(crate) fn classify_code(code: &str) -> Class {
    if THROTTLING_CODES.contains(&code) {
        Class::Throttled
    } else if FATAL_CODES.contains(&code) {
        Class::Fatal
    } else {
        // InternalFailure, ServiceUnavailable and anything new: the service's problem.
        Class::Transient
    }
}

/// Classifies a whole-call failure.
pub(crate) fn classify_call(err: &CallError) -> Class {
    match err {
        CallError::Timeout | CallError::Connection(_) => Class::Transient,
        CallError::Service { code, status, .. } => match classify_code(code) {
            Class::Transient => match status {
                // An unknown client error is the request's fault: do not hammer it.
                Some(s) if (400..500).contains(s) && *s != 408 && *s != 429 => Class::Fatal,
                Some(429) => Class::Throttled,
                _ => Class::Transient,
            },
            class => class,
        },
        CallError::Other(_) => Class::Fatal,
    }
}

/// Back-off for one Kinesis record's retries: backon's capped exponential sequence
/// (`base`, 2×, 4×, … up to `max`) with full jitter (a uniform draw from zero to that value).
#[derive(Debug)]
pub(crate) struct Backoff {
    sequence: ExponentialBackoff,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            sequence: ExponentialBuilder::default()
                .with_min_delay(base)
                .with_max_delay(max)
                .with_factor(2.0)
                .without_max_times()
                .build(),
            max,
        }
    }

    /// The next delay: uniform in `[0, cap]` where the cap doubles per call up to `max`.
    pub(crate) fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let cap = self.sequence.next().unwrap_or(self.max).min(self.max);
        let cap_nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.random_range(0..=cap_nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn entry_codes() {
        assert_eq!(
            classify_code("ProvisionedThroughputExceededException"),
            Class::Throttled
        );
        assert_eq!(classify_code("InternalFailure"), Class::Transient);
        assert_eq!(classify_code("KMSThrottlingException"), Class::Throttled);
        assert_eq!(classify_code("KMSAccessDeniedException"), Class::Fatal);
    }

    #[test]
    fn call_errors() {
        let service = |code: &str, status| CallError::Service {
            code: code.into(),
            message: String::new(),
            status: Some(status),
        };
        assert_eq!(classify_call(&CallError::Timeout), Class::Transient);
        assert_eq!(
            classify_call(&CallError::Connection("reset".into())),
            Class::Transient
        );
        assert_eq!(
            classify_call(&service("InternalFailure", 500)),
            Class::Transient
        );
        assert_eq!(classify_call(&service("Whatever", 503)), Class::Transient);
        assert_eq!(
            classify_call(&service("ResourceNotFoundException", 400)),
            Class::Fatal
        );
        assert_eq!(
            classify_call(&service("ValidationException", 400)),
            Class::Fatal
        );
        assert_eq!(
            classify_call(&service("AccessDeniedException", 400)),
            Class::Fatal
        );
        assert_eq!(classify_call(&service("NewClientError", 400)), Class::Fatal);
        assert_eq!(
            classify_call(&service("LimitExceededException", 400)),
            Class::Throttled
        );
        assert_eq!(classify_call(&service("Unknown", 429)), Class::Throttled);
        assert_eq!(
            classify_call(&CallError::Other("bad request".into())),
            Class::Fatal
        );
    }

    #[test]
    fn backoff_caps_grow_exponentially_with_full_jitter() {
        let mut rng = StdRng::seed_from_u64(7);
        let base = Duration::from_millis(100);
        let max = Duration::from_millis(1000);
        // Many draws per step: each stays under its cap, and the caps double up to max.
        for (step, cap) in [100u64, 200, 400, 800, 1000, 1000].into_iter().enumerate() {
            let mut largest = Duration::ZERO;
            for _ in 0..200 {
                let mut b = Backoff::new(base, max);
                for _ in 0..step {
                    b.next_delay(&mut rng);
                }
                let d = b.next_delay(&mut rng);
                assert!(
                    d <= Duration::from_millis(cap),
                    "step {step}: {d:?} > {cap} ms"
                );
                largest = largest.max(d);
            }
            // Full jitter spreads over the whole range: the largest of 200 draws is near the cap.
            assert!(
                largest >= Duration::from_millis(cap * 8 / 10),
                "step {step}: {largest:?}"
            );
        }
    }
}
