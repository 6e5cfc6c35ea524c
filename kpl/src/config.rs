//! Producer settings. Every setter documents its default; defaults follow the Java KPL where it
//! has one.

use std::time::Duration;

use crate::error::ConfigError;

/// Kinesis' hard ceiling for one record (data + partition key) on streams with raised limits.
pub const MAX_RECORD_SIZE_CEILING: usize = 10 * 1024 * 1024;

/// A stream's maximum record size unless it was raised.
pub(crate) const DEFAULT_RECORD_LIMIT: usize = 1024 * 1024;

/// Kinesis' ceiling for one PutRecords request (late 2025).
pub const MAX_REQUEST_SIZE: usize = 10 * 1024 * 1024;

/// Producer settings, built with chained setters:
///
/// ```
/// use std::time::Duration;
/// let config = kpl::ProducerConfig::default()
///     .record_max_buffered_time(Duration::from_millis(50))
///     .max_outstanding_bytes(64 << 20);
/// assert_eq!(config.get_record_ttl(), Duration::from_secs(30));
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ProducerConfig {
    pub(crate) record_max_buffered_time: Duration,
    pub(crate) aggregation_enabled: bool,
    pub(crate) aggregation_max_size: usize,
    pub(crate) aggregation_max_count: usize,
    pub(crate) collection_max_count: usize,
    pub(crate) collection_max_size: usize,
    pub(crate) rate_limit_percent: u32,
    pub(crate) record_ttl: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) max_concurrent_requests: usize,
    pub(crate) fail_if_throttled: bool,
    pub(crate) ordered: bool,
    pub(crate) max_user_record_size: Option<usize>,
    pub(crate) max_outstanding_records: usize,
    pub(crate) max_outstanding_bytes: usize,
    pub(crate) retry_base_delay: Duration,
    pub(crate) retry_max_delay: Duration,
    pub(crate) shard_map_refresh_interval: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            record_max_buffered_time: Duration::from_millis(100),
            aggregation_enabled: true,
            aggregation_max_size: 51_200,
            aggregation_max_count: u32::MAX as usize,
            collection_max_count: 500,
            collection_max_size: 5 * 1024 * 1024,
            rate_limit_percent: 150,
            record_ttl: Duration::from_secs(30),
            request_timeout: Duration::from_secs(6),
            max_concurrent_requests: 24,
            fail_if_throttled: false,
            ordered: false,
            max_user_record_size: None,
            max_outstanding_records: 500_000,
            max_outstanding_bytes: 256 * 1024 * 1024,
            retry_base_delay: Duration::from_millis(100),
            retry_max_delay: Duration::from_secs(5),
            shard_map_refresh_interval: Duration::from_secs(60),
        }
    }
}

macro_rules! setting {
    ($(#[$doc:meta])* $name:ident, $getter:ident: $ty:ty) => {
        $(#[$doc])*
        pub fn $name(mut self, value: $ty) -> Self {
            self.$name = value;
            self
        }

        #[doc = concat!("The `", stringify!($name), "` setting.")]
        pub fn $getter(&self) -> $ty {
            self.$name
        }
    };
}

impl ProducerConfig {
    setting!(
        /// How long a user record may wait for others to share its aggregate and PutRecords call.
        /// Default 100 ms.
        record_max_buffered_time, get_record_max_buffered_time: Duration
    );
    setting!(
        /// Pack user records bound for the same shard into KPL aggregated records. Default true.
        aggregation_enabled, get_aggregation_enabled: bool
    );
    setting!(
        /// Largest aggregated record in bytes (magic + protobuf + MD5). Default 51,200.
        aggregation_max_size, get_aggregation_max_size: usize
    );
    setting!(
        /// Most user records in one aggregate. Default 4,294,967,295 (no practical limit).
        aggregation_max_count, get_aggregation_max_count: usize
    );
    setting!(
        /// Most Kinesis records in one PutRecords call (1 to 500). Default 500.
        collection_max_count, get_collection_max_count: usize
    );
    setting!(
        /// Most bytes (data + partition keys) in one PutRecords call. Default 5 MiB.
        collection_max_size, get_collection_max_size: usize
    );
    setting!(
        /// Per-shard rate limit as a percentage of the shard's write limits (1,000 records/s and
        /// 1 MiB/s). Throttling lowers a shard's rate below this; it recovers over seconds.
        /// Default 150.
        rate_limit_percent, get_rate_limit_percent: u32
    );
    setting!(
        /// How long a user record may take, retries included, before it fails as expired.
        /// Default 30 s.
        record_ttl, get_record_ttl: Duration
    );
    setting!(
        /// Timeout of one PutRecords call. Default 6 s.
        request_timeout, get_request_timeout: Duration
    );
    setting!(
        /// Most PutRecords calls in flight at once. Default 24.
        max_concurrent_requests, get_max_concurrent_requests: usize
    );
    setting!(
        /// Fail throttled records at once instead of retrying them. Default false.
        fail_if_throttled, get_fail_if_throttled: bool
    );
    setting!(
        /// Store the records of each shard, so of each partition key (and each explicit hash
        /// key), in the order `put` was called, across retries, throttling and timeouts. Each
        /// shard then has one Kinesis record (an aggregate, or a record sent alone) in flight at
        /// a time, and one that fails is re-sent before anything put after it. What it costs:
        /// a shard takes one aggregate per PutRecords round trip, so with aggregation on it
        /// still reaches the shard's limits at small records; without aggregation it sends one
        /// record per round trip per shard. A record whose attempt timed out may have been
        /// stored, so its re-send can store a second copy after it (never before a later
        /// record). Across a split or merge too: a closed shard's records still on their way are
        /// stored before the shards that took over its keys send anything. Default false (the
        /// Java KPL's behaviour: no ordering across retries).
        ordered, get_ordered: bool
    );
    /// Largest user record, counted as Kinesis counts it: data + partition key (an explicit
    /// hash key does not count), 1 to 10 MiB. Default: each stream's own maximum record size,
    /// as DescribeStreamSummary reports it (`MaxRecordSizeInKiB`, read when the stream is
    /// first used and again, at most once a minute, when a larger record is put), or 1 MiB
    /// where the endpoint does not report it. Set, it caps every stream, and it is trusted as
    /// the limit of streams whose limit is not reported.
    pub fn max_user_record_size(mut self, value: usize) -> Self {
        self.max_user_record_size = Some(value);
        self
    }

    /// The `max_user_record_size` setting; `None`: each stream's own limit.
    pub fn get_max_user_record_size(&self) -> Option<usize> {
        self.max_user_record_size
    }
    setting!(
        /// Most user records accepted but not yet resolved; `put` waits and `try_put` fails
        /// beyond it. Default 500,000.
        max_outstanding_records, get_max_outstanding_records: usize
    );
    setting!(
        /// Most bytes of user records (as [`UserRecord::size`](crate::UserRecord::size)) accepted
        /// but not yet resolved. Default 256 MiB.
        max_outstanding_bytes, get_max_outstanding_bytes: usize
    );
    setting!(
        /// First back-off delay before a retry; it doubles per retry, with full jitter.
        /// Default 100 ms.
        retry_base_delay, get_retry_base_delay: Duration
    );
    setting!(
        /// Longest back-off delay. Default 5 s.
        retry_max_delay, get_retry_max_delay: Duration
    );
    setting!(
        /// How often each stream's shard map is refreshed even when nothing suggests it changed.
        /// Default 60 s.
        shard_map_refresh_interval, get_shard_map_refresh_interval: Duration
    );

    /// Checks the settings fit together; the producer calls this when it is built.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |m: String| Err(ConfigError(m));
        if !(1..=500).contains(&self.collection_max_count) {
            return fail(format!(
                "collection_max_count is {}: PutRecords takes 1 to 500 records",
                self.collection_max_count
            ));
        }
        if let Some(max) = self.max_user_record_size
            && (max == 0 || max > MAX_RECORD_SIZE_CEILING)
        {
            return fail(format!(
                "max_user_record_size is {max}: use 1 to {MAX_RECORD_SIZE_CEILING} bytes"
            ));
        }
        // An aggregate is one Kinesis record: it must fit the stream's record limit, 1 MiB unless
        // the stream's was raised (which raising max_user_record_size says). (A record larger
        // than collection_max_size is sent alone.)
        let record_limit = self
            .max_user_record_size
            .map_or(DEFAULT_RECORD_LIMIT, |max| max.max(DEFAULT_RECORD_LIMIT));
        if self.aggregation_max_size > record_limit {
            return fail(format!(
                "aggregation_max_size ({}) is above {record_limit} bytes: an aggregate is one Kinesis record, and Kinesis refuses records over the stream's maximum record size (1 MiB unless raised; raise max_user_record_size too for a stream whose limit was raised), failing every user record inside",
                self.aggregation_max_size
            ));
        }
        if self.collection_max_size > MAX_REQUEST_SIZE {
            return fail(format!(
                "collection_max_size is {}: a PutRecords request carries at most {MAX_REQUEST_SIZE} bytes",
                self.collection_max_size
            ));
        }
        // (Unset, records above max_outstanding_bytes are refused at put.)
        let largest = self.max_user_record_size.unwrap_or(DEFAULT_RECORD_LIMIT);
        if self.max_outstanding_bytes < largest {
            return fail(format!(
                "max_outstanding_bytes ({}) is below {largest} bytes (max_user_record_size, or 1 MiB when unset): a largest record could never be accepted",
                self.max_outstanding_bytes
            ));
        }
        if self.max_outstanding_records == 0 || self.max_concurrent_requests == 0 {
            return fail(
                "max_outstanding_records and max_concurrent_requests must be at least 1".into(),
            );
        }
        if self.aggregation_max_count == 0 {
            return fail("aggregation_max_count must be at least 1".into());
        }
        if self.rate_limit_percent == 0 {
            return fail("rate_limit_percent must be at least 1".into());
        }
        if self.record_ttl.is_zero() || self.request_timeout.is_zero() {
            return fail("record_ttl and request_timeout must be above zero".into());
        }
        if self.retry_base_delay > self.retry_max_delay {
            return fail(format!(
                "retry_base_delay ({:?}) is above retry_max_delay ({:?})",
                self.retry_base_delay, self.retry_max_delay
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_follow_kpl() {
        let c = ProducerConfig::default();
        c.validate().unwrap();
        assert_eq!(c.get_aggregation_max_size(), 51_200);
        assert_eq!(c.get_collection_max_count(), 500);
        assert_eq!(c.get_rate_limit_percent(), 150);
        assert_eq!(c.get_record_max_buffered_time(), Duration::from_millis(100));
    }

    #[test]
    fn contradictory_settings_say_what_to_change() {
        let err = ProducerConfig::default()
            .collection_max_count(501)
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("collection_max_count"), "{err}");
        let err = ProducerConfig::default()
            .max_outstanding_bytes(1024)
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("max_outstanding_bytes"), "{err}");
        let err = ProducerConfig::default()
            .max_user_record_size(11 * 1024 * 1024)
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("max_user_record_size"), "{err}");
        // Seen: 4 MiB built a 3 MB aggregate that Kinesis refused, failing 3,000 records.
        let err = ProducerConfig::default()
            .aggregation_max_size(4 * 1024 * 1024)
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("aggregation_max_size"), "{err}");
        ProducerConfig::default()
            .max_user_record_size(4 * 1024 * 1024)
            .aggregation_max_size(4 * 1024 * 1024)
            .validate()
            .expect("a stream with a raised record size takes larger aggregates");
        let err = ProducerConfig::default()
            .collection_max_size(11 * 1024 * 1024)
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("collection_max_size"), "{err}");
        // A lower cap on user records leaves aggregates at the stream's limit.
        ProducerConfig::default()
            .max_user_record_size(1024)
            .validate()
            .expect("aggregates of 51,200 bytes with user records of at most 1 KiB");
    }
}
