//! The one retry loop: call, classify the failure, back off with jitter, call again, until it
//! succeeds, the failure is fatal, or the attempts or the time budget run out.

use std::future::Future;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::backoff::{Backoff, BackoffConfig};
use crate::class::Class;

/// How often and how long to retry one operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all (1: no retry).
    pub max_attempts: u32,
    /// The back-off between attempts.
    pub backoff: BackoffConfig,
}

impl RetryPolicy {
    /// `max_attempts` attempts (at least 1) with `backoff` between them.
    pub fn new(max_attempts: u32, backoff: BackoffConfig) -> Self {
        RetryPolicy {
            max_attempts: max_attempts.max(1),
            backoff,
        }
    }

    /// One attempt, no retry.
    pub fn once() -> Self {
        Self::new(
            1,
            BackoffConfig::new(Duration::from_millis(1), Duration::from_millis(1))
                .expect("valid back-off"),
        )
    }
}

/// Runs `call` until it succeeds, `classify` says fatal, or `policy`'s attempts are used up;
/// returns the last error then. Jitter comes from a fresh RNG seeded from the thread's.
pub async fn retry<T, E, F, Fut>(
    policy: RetryPolicy,
    classify: impl Fn(&E) -> Class,
    call: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut rng = StdRng::from_rng(&mut rand::rng());
    retry_with_rng(policy, &mut rng, classify, call).await
}

/// [`retry`] with the caller's RNG (seeded in tests).
pub async fn retry_with_rng<T, E, F, Fut>(
    policy: RetryPolicy,
    rng: &mut StdRng,
    classify: impl Fn(&E) -> Class,
    call: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    retry_notify(policy, rng, classify, |_, _| {}, call).await
}

/// [`retry_with_rng`], telling `notify` of each failure that will be retried and the delay
/// before the next attempt (to log it).
pub async fn retry_notify<T, E, F, Fut>(
    policy: RetryPolicy,
    rng: &mut StdRng,
    classify: impl Fn(&E) -> Class,
    mut notify: impl FnMut(&E, Duration),
    mut call: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut backoff = Backoff::new(policy.backoff);
    let mut attempt = 1;
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) if classify(&e) == Class::Fatal || attempt >= policy.max_attempts => {
                return Err(e);
            }
            Err(e) => {
                attempt += 1;
                let delay = backoff.next_delay(rng);
                notify(&e, delay);
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn policy(attempts: u32) -> RetryPolicy {
        RetryPolicy::new(
            attempts,
            BackoffConfig::new(Duration::from_millis(100), Duration::from_secs(1)).unwrap(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_until_success() {
        let calls = Cell::new(0);
        let started = tokio::time::Instant::now();
        let result: Result<u32, Class> = retry(
            policy(5),
            |c| *c,
            || {
                calls.set(calls.get() + 1);
                let n = calls.get();
                async move { if n < 3 { Err(Class::Transient) } else { Ok(n) } }
            },
        )
        .await;
        assert_eq!(result, Ok(3));
        // Two back-offs of at most 100 ms and 200 ms.
        assert!(started.elapsed() <= Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn fatal_failures_stop_at_once_and_attempts_are_bounded() {
        let calls = Cell::new(0);
        let result: Result<(), Class> = retry(
            policy(5),
            |c| *c,
            || {
                calls.set(calls.get() + 1);
                async { Err(Class::Fatal) }
            },
        )
        .await;
        assert_eq!((result, calls.get()), (Err(Class::Fatal), 1));

        calls.set(0);
        let result: Result<(), Class> = retry(
            policy(4),
            |c| *c,
            || {
                calls.set(calls.get() + 1);
                async { Err(Class::Throttled) }
            },
        )
        .await;
        assert_eq!((result, calls.get()), (Err(Class::Throttled), 4));
    }
}
