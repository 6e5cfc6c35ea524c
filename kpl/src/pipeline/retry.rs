//! What a failure means for the producer's records, through the classifier shared with the
//! consumer (`kinesis-retry`): retry soon (transient), retry later and slow the shard down
//! (throttled), or give up (fatal). Also the back-off between retries.

use std::time::Duration;

use kinesis_retry::{BackoffConfig, classify};
pub(crate) use kinesis_retry::{Class, classify_code};
use rand::Rng;

use crate::kinesis::CallError;

/// Classifies a whole-call failure.
pub(crate) fn classify_call(err: &CallError) -> Class {
    match err {
        CallError::Timeout | CallError::Connection(_) => Class::Transient,
        CallError::Service { code, status, .. } => classify(code, *status),
        CallError::Other(_) => Class::Fatal,
    }
}

/// Back-off for one Kinesis record's retries: the shared capped exponential back-off with full
/// jitter (a uniform draw from zero to a cap that doubles from `base` up to `max`).
#[derive(Debug)]
pub(crate) struct Backoff(kinesis_retry::Backoff);

impl Backoff {
    /// `base` is at least 1 ms and `max` at least `base` (the configuration checks the order).
    pub(crate) fn new(base: Duration, max: Duration) -> Self {
        let base = base.max(Duration::from_millis(1));
        let config = BackoffConfig::new(base, max.max(base)).expect("base > 0 and max >= base");
        Backoff(kinesis_retry::Backoff::new(config))
    }

    /// The next delay: uniform in `[0, cap]` where the cap doubles per call up to `max`.
    pub(crate) fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        self.0.next_delay(rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(
            classify_call(&service("ResourceNotFoundException", 400)),
            Class::Fatal
        );
        assert_eq!(classify_call(&service("Unknown", 429)), Class::Throttled);
        assert_eq!(
            classify_call(&CallError::Other("bad request".into())),
            Class::Fatal
        );
    }
}
