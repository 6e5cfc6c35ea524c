//! How many PutRecords calls may be in flight: additive increase, multiplicative decrease (as TCP
//! does with its window), so a slow or failing endpoint is not met with a storm of re-sends.
//!
//! - A call that times out, loses its connection or gets an HTTP 5xx (or a record that comes back
//!   `InternalFailure`) halves the limit, down to one call. Only one cut per round of calls: a
//!   failure of a call started before the last cut was sent under the old limit and cuts nothing
//!   more.
//! - Each successful call adds `1 / limit`, so the limit grows by about one call per limit's worth
//!   of successes, up to `max_concurrent_requests`.
//!
//! Throttling is handled per shard by the shard's rate limiter, not here.

use tokio::time::Instant;

/// The current limit on calls in flight.
#[derive(Debug)]
pub(crate) struct Concurrency {
    max: f64,
    limit: f64,
    last_cut: Option<Instant>,
}

impl Concurrency {
    pub(crate) fn new(max: usize) -> Self {
        let max = max.max(1) as f64;
        Concurrency {
            max,
            limit: max,
            last_cut: None,
        }
    }

    /// Calls that may be in flight now.
    pub(crate) fn limit(&self) -> usize {
        (self.limit as usize).max(1)
    }

    /// A call started at `started` met a slow or failing endpoint; `true` when the limit was cut.
    pub(crate) fn congested(&mut self, started: Instant, now: Instant) -> bool {
        if self.last_cut.is_some_and(|cut| started < cut) {
            return false;
        }
        self.limit = (self.limit / 2.0).max(1.0);
        self.last_cut = Some(now);
        true
    }

    /// A call succeeded.
    pub(crate) fn succeeded(&mut self) {
        self.limit = (self.limit + 1.0 / self.limit).min(self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn failures_halve_once_per_round_and_successes_recover_gradually() {
        let t0 = Instant::now();
        let mut c = Concurrency::new(24);
        assert_eq!(c.limit(), 24);
        // 24 calls in flight all time out together: one cut, not 24.
        let cut_at = t0 + Duration::from_secs(6);
        for _ in 0..24 {
            c.congested(t0, cut_at);
        }
        assert_eq!(c.limit(), 12);
        // A call sent after that cut fails too: the limit halves again.
        assert!(c.congested(
            cut_at + Duration::from_millis(1),
            cut_at + Duration::from_secs(7)
        ));
        assert_eq!(c.limit(), 6);
        for i in 0..10 {
            // Each started after the cut before it.
            let started = cut_at + Duration::from_secs(8 + 2 * i);
            c.congested(started, started + Duration::from_secs(1));
        }
        assert_eq!(c.limit(), 1, "never below one call");
        // Recovery: about one more call per limit's worth of successes.
        let mut calls = 0;
        while c.limit() < 24 {
            c.succeeded();
            calls += 1;
        }
        assert!(
            (250..300).contains(&calls),
            "back to 24 after about 1+2+...+23 successful calls: {calls}"
        );
        for _ in 0..100 {
            c.succeeded();
        }
        assert_eq!(c.limit(), 24, "never above the setting");
    }
}
