//! Typed errors. Each message says what was wrong and what a valid value looks like.

/// An explicit hash key or hash key range that is not a decimal integer in `0..=2^128-1`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HashKeyError {
    /// The text was empty.
    #[error("explicit hash key is empty: give a decimal integer from 0 to 2^128-1")]
    Empty,
    /// A character other than an ASCII digit.
    #[error(
        "explicit hash key {input:?} is not a decimal integer (character {position} is not a digit 0-9): give a decimal integer from 0 to 2^128-1"
    )]
    NotDecimal {
        /// The rejected text.
        input: String,
        /// Byte position of the first non-digit.
        position: usize,
    },
    /// The value is 2^128 or more.
    #[error(
        "explicit hash key {input:?} is larger than 2^128-1 (340282366920938463463374607431768211455)"
    )]
    OutOfRange {
        /// The rejected text.
        input: String,
    },
    /// Leading zeros, which Kinesis refuses in an explicit hash key (it takes
    /// `0|[1-9][0-9]{0,38}`).
    #[error(
        "explicit hash key {input:?} has leading zeros, which Kinesis refuses: write it without them ({canonical})"
    )]
    LeadingZeros {
        /// The rejected text.
        input: String,
        /// The same number as Kinesis accepts it.
        canonical: String,
    },
    /// A range whose start lies after its end.
    #[error("hash key range starts at {start} after its end {end}")]
    EmptyRange {
        /// The range's start as given.
        start: String,
        /// The range's end as given.
        end: String,
    },
}

/// A partition key that Kinesis would reject.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PartitionKeyError {
    /// The key was empty.
    #[error("partition key is empty: give 1 to 256 Unicode characters")]
    Empty,
    /// The key has more than 256 characters.
    #[error("partition key has {chars} characters: shorten it to at most 256 Unicode characters")]
    TooLong {
        /// How many Unicode scalar values the key has.
        chars: usize,
    },
}

/// A sequence number that is not of the form Kinesis uses (`0|[1-9][0-9]{0,128}`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SequenceNumberError {
    /// The text was empty.
    #[error("sequence number is empty: give the decimal digits Kinesis returned")]
    Empty,
    /// More than 129 digits.
    #[error("sequence number has {digits} digits; Kinesis sequence numbers have at most 129")]
    TooLong {
        /// How many characters it had.
        digits: usize,
    },
    /// A character other than an ASCII digit.
    #[error(
        "sequence number {input:?} has a non-digit at byte {position}: give the decimal digits Kinesis returned"
    )]
    NotDecimal {
        /// The rejected text.
        input: String,
        /// Byte position of the first non-digit.
        position: usize,
    },
    /// A leading zero on a number other than 0.
    #[error("sequence number {input:?} has a leading zero; Kinesis never writes one")]
    LeadingZero {
        /// The rejected text.
        input: String,
    },
}
