//! One back-off: capped exponential with full jitter. The cap starts at `base` and doubles per
//! delay up to `max`; each delay is a uniform draw in `[0, cap]` from an RNG the caller passes in
//! (seeded in tests, so a schedule reproduces exactly).

use std::time::Duration;

use rand::Rng;

/// A back-off's settings, checked when built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffConfig {
    base: Duration,
    max: Duration,
}

/// Settings a back-off cannot work with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BackoffConfigError {
    /// The first cap is zero: retries would spin.
    #[error("back-off base must be greater than zero")]
    ZeroBase,
    /// The largest cap is smaller than the first.
    #[error("back-off max ({max:?}) must be at least its base ({base:?})")]
    MaxBelowBase {
        /// The base given.
        base: Duration,
        /// The max given.
        max: Duration,
    },
}

impl BackoffConfig {
    /// Caps from `base`, doubling, up to `max`.
    pub fn new(base: Duration, max: Duration) -> Result<Self, BackoffConfigError> {
        if base.is_zero() {
            return Err(BackoffConfigError::ZeroBase);
        }
        if max < base {
            return Err(BackoffConfigError::MaxBelowBase { base, max });
        }
        Ok(BackoffConfig { base, max })
    }

    /// The first cap.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The largest cap.
    pub fn max(&self) -> Duration {
        self.max
    }
}

/// The state of one sequence of retries.
#[derive(Clone, Debug)]
pub struct Backoff {
    config: BackoffConfig,
    cap: Duration,
    attempts: u32,
}

impl Backoff {
    /// A fresh sequence.
    pub fn new(config: BackoffConfig) -> Self {
        Backoff {
            config,
            cap: config.base,
            attempts: 0,
        }
    }

    /// The next delay: uniform in `[0, cap]`; the cap then doubles, up to `max`.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let cap = self.cap;
        self.cap = (self.cap * 2).min(self.config.max);
        self.attempts = self.attempts.saturating_add(1);
        let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.random_range(0..=nanos))
    }

    /// The cap of the next delay (the longest it can be), without drawing it.
    pub fn next_cap(&self) -> Duration {
        self.cap
    }

    /// How many delays were drawn since the start or the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Back to the first cap (after a success).
    pub fn reset(&mut self) {
        self.cap = self.config.base;
        self.attempts = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn settings_are_checked() {
        let ms = Duration::from_millis;
        assert_eq!(
            BackoffConfig::new(Duration::ZERO, ms(1)),
            Err(BackoffConfigError::ZeroBase)
        );
        assert!(matches!(
            BackoffConfig::new(ms(10), ms(5)),
            Err(BackoffConfigError::MaxBelowBase { .. })
        ));
        assert!(BackoffConfig::new(ms(10), ms(10)).is_ok());
    }

    #[test]
    fn caps_double_up_to_max_with_full_jitter() {
        let mut rng = StdRng::seed_from_u64(7);
        let config =
            BackoffConfig::new(Duration::from_millis(100), Duration::from_millis(1000)).unwrap();
        for (step, cap) in [100u64, 200, 400, 800, 1000, 1000].into_iter().enumerate() {
            let mut largest = Duration::ZERO;
            for _ in 0..200 {
                let mut b = Backoff::new(config);
                for _ in 0..step {
                    b.next_delay(&mut rng);
                }
                assert_eq!(b.next_cap(), Duration::from_millis(cap));
                let d = b.next_delay(&mut rng);
                assert!(d <= Duration::from_millis(cap), "step {step}: {d:?}");
                largest = largest.max(d);
            }
            // Full jitter spreads over the whole range: the largest of 200 draws is near the cap.
            assert!(
                largest >= Duration::from_millis(cap * 8 / 10),
                "step {step}"
            );
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_delays_and_reset_starts_over() {
        let config = BackoffConfig::new(Duration::from_millis(10), Duration::from_secs(1)).unwrap();
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut b = Backoff::new(config);
            (0..8).map(|_| b.next_delay(&mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
        let mut b = Backoff::new(config);
        let mut rng = StdRng::seed_from_u64(1);
        b.next_delay(&mut rng);
        b.next_delay(&mut rng);
        assert_eq!(b.attempts(), 2);
        b.reset();
        assert_eq!((b.attempts(), b.next_cap()), (0, Duration::from_millis(10)));
    }
}
