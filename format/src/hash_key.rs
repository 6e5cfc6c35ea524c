//! Hash keys: where a user record lands in a stream's 128-bit key space.
//!
//! A record's hash key is its explicit hash key when it has one, else the MD5 digest of the UTF-8
//! bytes of its partition key read as a big-endian unsigned 128-bit integer. A shard owns the
//! inclusive range `[starting_hash_key, ending_hash_key]`.

use std::fmt;
use std::str::FromStr;

use md5::{Digest, Md5};

use crate::error::{HashKeyError, PartitionKeyError};

/// The most Unicode scalar values a partition key may have.
pub const MAX_PARTITION_KEY_CHARS: usize = 256;

/// A position in the 128-bit hash key space of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HashKey(pub u128);

impl HashKey {
    /// The smallest hash key, 0.
    pub const MIN: HashKey = HashKey(0);
    /// The largest hash key, 2^128 − 1.
    pub const MAX: HashKey = HashKey(u128::MAX);

    /// The hash key Kinesis derives from a partition key: MD5 of its UTF-8 bytes, big-endian.
    pub fn from_partition_key(partition_key: &str) -> HashKey {
        let digest: [u8; 16] = Md5::digest(partition_key.as_bytes()).into();
        HashKey(u128::from_be_bytes(digest))
    }

    /// The hash keys of many partition keys, in order: the same as calling
    /// [`from_partition_key`](Self::from_partition_key) on each, but the MD5s are computed several
    /// at a time, side by side, which costs about a quarter as much per key.
    pub fn from_partition_keys(partition_keys: &[&str]) -> Vec<HashKey> {
        let messages: Vec<&[u8]> = partition_keys.iter().map(|k| k.as_bytes()).collect();
        crate::md5_lanes::digest_each(&messages)
            .into_iter()
            .map(|digest| HashKey(u128::from_be_bytes(digest)))
            .collect()
    }

    /// Parses an explicit hash key: a decimal integer in `0..=2^128-1`, digits only.
    pub fn parse_explicit(text: &str) -> Result<HashKey, HashKeyError> {
        if text.is_empty() {
            return Err(HashKeyError::Empty);
        }
        if let Some(position) = text.bytes().position(|b| !b.is_ascii_digit()) {
            return Err(HashKeyError::NotDecimal {
                input: text.to_owned(),
                position,
            });
        }
        // Every character is an ASCII digit, so the only possible failure is overflow.
        text.parse::<u128>()
            .map(HashKey)
            .map_err(|_| HashKeyError::OutOfRange {
                input: text.to_owned(),
            })
    }

    /// Parses an explicit hash key as Kinesis accepts it on PutRecords: `0` or a decimal integer
    /// without leading zeros, below 2^128. (Reading is lenient: [`HashKey::parse_explicit`]
    /// accepts leading zeros, as the Java KCL does inside aggregates.)
    pub fn parse_explicit_strict(text: &str) -> Result<HashKey, HashKeyError> {
        let key = HashKey::parse_explicit(text)?;
        if text.len() > 1 && text.starts_with('0') {
            return Err(HashKeyError::LeadingZeros {
                input: text.to_owned(),
                canonical: key.to_string(),
            });
        }
        Ok(key)
    }

    /// The hash key of a user record: its explicit hash key if given, else its partition key's.
    pub fn for_record(
        partition_key: &str,
        explicit_hash_key: Option<&str>,
    ) -> Result<HashKey, HashKeyError> {
        match explicit_hash_key {
            Some(ehk) => HashKey::parse_explicit(ehk),
            None => Ok(HashKey::from_partition_key(partition_key)),
        }
    }
}

impl fmt::Display for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for HashKey {
    type Err = HashKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HashKey::parse_explicit(s)
    }
}

/// An inclusive range of hash keys, as a shard owns it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HashKeyRange {
    /// The first hash key of the range.
    pub start: HashKey,
    /// The last hash key of the range (inclusive).
    pub end: HashKey,
}

impl HashKeyRange {
    /// The whole key space, as a one-shard stream owns it.
    pub const ALL: HashKeyRange = HashKeyRange {
        start: HashKey::MIN,
        end: HashKey::MAX,
    };

    /// A range from its two inclusive ends; `None` when `start > end`.
    pub fn new(start: HashKey, end: HashKey) -> Option<HashKeyRange> {
        (start <= end).then_some(HashKeyRange { start, end })
    }

    /// Parses a range from the decimal strings Kinesis returns in a shard's `HashKeyRange`.
    pub fn parse(start: &str, end: &str) -> Result<HashKeyRange, HashKeyError> {
        let (s, e) = (
            HashKey::parse_explicit(start)?,
            HashKey::parse_explicit(end)?,
        );
        HashKeyRange::new(s, e).ok_or_else(|| HashKeyError::EmptyRange {
            start: start.to_owned(),
            end: end.to_owned(),
        })
    }

    /// Whether `key` lies within the range (both ends included).
    pub fn contains(&self, key: HashKey) -> bool {
        self.start <= key && key <= self.end
    }
}

/// Checks that a partition key is 1 to 256 Unicode characters, as Kinesis requires.
pub fn validate_partition_key(partition_key: &str) -> Result<(), PartitionKeyError> {
    if partition_key.is_empty() {
        return Err(PartitionKeyError::Empty);
    }
    // Fast path: a key of at most 256 bytes has at most 256 characters.
    if partition_key.len() > MAX_PARTITION_KEY_CHARS {
        let chars = partition_key.chars().count();
        if chars > MAX_PARTITION_KEY_CHARS {
            return Err(PartitionKeyError::TooLong { chars });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_key_hash_matches_known_md5() {
        // md5("a") = 0cc175b9c0f1b6a831c399e269772661
        assert_eq!(
            HashKey::from_partition_key("a"),
            HashKey(0x0cc175b9c0f1b6a831c399e269772661)
        );
        // md5("") = d41d8cd98f00b204e9800998ecf8427e
        assert_eq!(
            HashKey::from_partition_key(""),
            HashKey(0xd41d8cd98f00b204e9800998ecf8427e)
        );
    }

    #[test]
    fn explicit_hash_key_bounds() {
        assert_eq!(HashKey::parse_explicit("0"), Ok(HashKey(0)));
        let max = u128::MAX.to_string();
        assert_eq!(HashKey::parse_explicit(&max), Ok(HashKey::MAX));
        // 2^128 is one past the end.
        let over = "340282366920938463463374607431768211456";
        assert!(matches!(
            HashKey::parse_explicit(over),
            Err(HashKeyError::OutOfRange { .. })
        ));
        assert_eq!(HashKey::parse_explicit(""), Err(HashKeyError::Empty));
    }

    #[test]
    fn a_put_refuses_leading_zeros_that_reading_accepts() {
        assert_eq!(HashKey::parse_explicit("007"), Ok(HashKey(7)));
        assert_eq!(HashKey::parse_explicit_strict("0"), Ok(HashKey(0)));
        assert_eq!(HashKey::parse_explicit_strict("70"), Ok(HashKey(70)));
        let err = HashKey::parse_explicit_strict("007").unwrap_err();
        assert_eq!(
            err,
            HashKeyError::LeadingZeros {
                input: "007".into(),
                canonical: "7".into()
            }
        );
        assert!(err.to_string().contains("(7)"), "{err}");
    }

    #[test]
    fn explicit_hash_key_rejects_non_digits_with_position() {
        for (input, position) in [("-1", 0), ("+1", 0), ("12a", 2), (" 1", 0), ("1 ", 1)] {
            assert_eq!(
                HashKey::parse_explicit(input),
                Err(HashKeyError::NotDecimal {
                    input: input.to_owned(),
                    position
                }),
                "{input:?}"
            );
        }
        let err = HashKey::parse_explicit("12a").unwrap_err();
        assert!(err.to_string().contains("decimal"), "{err}");
    }

    #[test]
    fn partition_key_length_counts_characters_not_bytes() {
        assert_eq!(validate_partition_key(""), Err(PartitionKeyError::Empty));
        assert!(validate_partition_key(&"k".repeat(256)).is_ok());
        assert_eq!(
            validate_partition_key(&"k".repeat(257)),
            Err(PartitionKeyError::TooLong { chars: 257 })
        );
        // 256 four-byte characters are 1024 bytes but still a valid key.
        assert!(validate_partition_key(&"🦀".repeat(256)).is_ok());
        assert!(validate_partition_key(&"🦀".repeat(257)).is_err());
    }

    #[test]
    fn range_contains_both_ends() {
        let r = HashKeyRange::parse("10", "20").unwrap();
        assert!(!r.contains(HashKey(9)));
        assert!(r.contains(HashKey(10)));
        assert!(r.contains(HashKey(20)));
        assert!(!r.contains(HashKey(21)));
        assert!(matches!(
            HashKeyRange::parse("20", "10"),
            Err(HashKeyError::EmptyRange { .. })
        ));
        assert!(HashKeyRange::ALL.contains(HashKey::MAX));
    }
}
