//! Per-shard rate limiter: a records bucket and a bytes bucket at `rate_limit_percent` of the
//! shard's write limits (1,000 records/s, 1 MiB/s). Beyond the Java KPL, throttling cuts the
//! shard's rate in half (down to 1/16) and the rate recovers by a tenth of the limit per second.

use std::time::Duration;

use tokio::time::Instant;

const SHARD_RECORDS_PER_SEC: f64 = 1_000.0;
const SHARD_BYTES_PER_SEC: f64 = 1024.0 * 1024.0;
const MIN_FACTOR: f64 = 1.0 / 16.0;
const RECOVERY_PER_SEC: f64 = 0.1;
/// Throttles closer together than this count as one (a whole batch fails at once).
const THROTTLE_COOLDOWN: Duration = Duration::from_millis(200);

#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    /// Tokens per second at full rate; also the bucket's capacity (one second of burst).
    rate: f64,
}

impl Bucket {
    /// Whether `cost` may be taken now: enough tokens, or a full bucket for an oversize cost.
    fn allows(&self, cost: f64, factor: f64) -> bool {
        self.tokens >= cost.min(self.rate * factor)
    }

    /// Seconds until `allows` holds.
    fn wait_secs(&self, cost: f64, factor: f64) -> f64 {
        let need = cost.min(self.rate * factor) - self.tokens;
        if need <= 0.0 {
            0.0
        } else {
            need / (self.rate * factor)
        }
    }
}

/// One shard's limiter.
#[derive(Debug, Clone)]
pub(crate) struct ShardLimiter {
    records: Bucket,
    bytes: Bucket,
    /// Share of the configured rate in force: 1.0, or less after throttling.
    factor: f64,
    updated: Instant,
    last_throttle: Option<Instant>,
}

impl ShardLimiter {
    pub(crate) fn new(rate_limit_percent: u32, now: Instant) -> Self {
        let scale = f64::from(rate_limit_percent) / 100.0;
        let records = SHARD_RECORDS_PER_SEC * scale;
        let bytes = SHARD_BYTES_PER_SEC * scale;
        ShardLimiter {
            records: Bucket {
                tokens: records,
                rate: records,
            },
            bytes: Bucket {
                tokens: bytes,
                rate: bytes,
            },
            factor: 1.0,
            updated: now,
            last_throttle: None,
        }
    }

    /// Brings the buckets and the recovering rate up to `now`.
    pub(crate) fn advance(&mut self, now: Instant) {
        let secs = now.saturating_duration_since(self.updated).as_secs_f64();
        if secs <= 0.0 {
            return;
        }
        self.updated = now;
        // Refill at the rate in force, then let the rate recover.
        for bucket in [&mut self.records, &mut self.bytes] {
            let cap = bucket.rate * self.factor;
            bucket.tokens = (bucket.tokens + bucket.rate * self.factor * secs).min(cap);
        }
        self.factor = (self.factor + RECOVERY_PER_SEC * secs).min(1.0);
    }

    /// Takes one Kinesis record of `bytes` bytes if both buckets allow it now.
    pub(crate) fn try_acquire(&mut self, now: Instant, bytes: usize) -> bool {
        self.advance(now);
        let bytes = bytes as f64;
        if self.records.allows(1.0, self.factor) && self.bytes.allows(bytes, self.factor) {
            self.records.tokens -= 1.0;
            self.bytes.tokens -= bytes;
            true
        } else {
            false
        }
    }

    /// How long until a record of `bytes` bytes may go.
    pub(crate) fn wait(&mut self, now: Instant, bytes: usize) -> Duration {
        self.advance(now);
        let secs = self
            .records
            .wait_secs(1.0, self.factor)
            .max(self.bytes.wait_secs(bytes as f64, self.factor));
        // Round up to a millisecond so a wake-up never comes a hair too early.
        Duration::from_secs_f64(secs) + Duration::from_millis(1)
    }

    /// The shard said it was over its limits: halve the rate and empty the buckets.
    pub(crate) fn throttled(&mut self, now: Instant) {
        self.advance(now);
        if self
            .last_throttle
            .is_some_and(|t| now.saturating_duration_since(t) < THROTTLE_COOLDOWN)
        {
            return;
        }
        self.last_throttle = Some(now);
        self.factor = (self.factor / 2.0).max(MIN_FACTOR);
        self.records.tokens = self.records.tokens.min(0.0);
        self.bytes.tokens = self.bytes.tokens.min(0.0);
    }

    /// The rate in force as a percentage of the shard's limits.
    pub(crate) fn rate_percent(&self, rate_limit_percent: u32) -> f64 {
        f64::from(rate_limit_percent) * self.factor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many 100-byte records pass in `secs` seconds when tried every millisecond.
    fn passed(l: &mut ShardLimiter, start: Instant, secs: u64, bytes: usize) -> usize {
        let mut n = 0;
        for ms in 0..secs * 1000 {
            let now = start + Duration::from_millis(ms);
            while l.try_acquire(now, bytes) {
                n += 1;
            }
        }
        n
    }

    #[test]
    fn records_bucket_holds_the_rate() {
        let start = Instant::now();
        let mut l = ShardLimiter::new(100, start);
        // One second of burst, then 1,000/s.
        let n = passed(&mut l, start, 10, 100);
        assert!((10_900..=11_000).contains(&n), "{n}");
    }

    #[test]
    fn bytes_bucket_holds_the_rate_for_large_records() {
        let start = Instant::now();
        let mut l = ShardLimiter::new(150, start);
        // 50 KiB records: the bytes bucket (1.5 MiB/s) binds long before 1,500 records/s.
        let n = passed(&mut l, start, 10, 50 * 1024);
        let expected = 11.0 * 1.5 * 1024.0 / 50.0;
        assert!(
            (n as f64 - expected).abs() < expected * 0.03,
            "{n} vs {expected}"
        );
    }

    #[test]
    fn a_record_larger_than_the_bucket_still_passes_when_it_is_full() {
        let start = Instant::now();
        let mut l = ShardLimiter::new(10, start);
        // 10% of 1 MiB/s is ~100 KiB: a 1 MiB record must not wait forever.
        assert!(l.try_acquire(start, 1024 * 1024));
        assert!(!l.try_acquire(start, 1024 * 1024));
        let wait = l.wait(start, 1024 * 1024);
        assert!(
            wait > Duration::from_secs(5) && wait < Duration::from_secs(20),
            "{wait:?}"
        );
        assert!(l.try_acquire(start + wait, 1024 * 1024));
    }

    #[test]
    fn throttling_halves_the_rate_and_it_recovers() {
        let start = Instant::now();
        let mut l = ShardLimiter::new(100, start);
        l.throttled(start);
        assert_eq!(l.rate_percent(100), 50.0);
        // A second throttle within the cool-down counts once.
        l.throttled(start + Duration::from_millis(10));
        assert!(
            (l.rate_percent(100) - 50.0).abs() < 0.5,
            "{}",
            l.rate_percent(100)
        );
        l.throttled(start + Duration::from_millis(300));
        assert!(l.rate_percent(100) < 30.0);
        for _ in 0..10 {
            l.throttled(start + Duration::from_secs(1));
        }
        assert!(l.rate_percent(100) >= 100.0 / 16.0);
        // Recovery: +10% of the limit per second, back to the full rate.
        l.try_acquire(start + Duration::from_secs(12), 1);
        assert_eq!(l.rate_percent(100), 100.0);
    }

    #[test]
    fn throttled_shard_passes_fewer_records() {
        let start = Instant::now();
        let mut steady = ShardLimiter::new(100, start);
        let mut hit = ShardLimiter::new(100, start);
        hit.throttled(start);
        let a = passed(&mut steady, start, 2, 100);
        let b = passed(&mut hit, start, 2, 100);
        assert!(b * 2 < a, "throttled {b} vs steady {a}");
    }
}
