//! Sequence numbers and their order.
//!
//! Kinesis sequence numbers are decimal strings of up to 129 digits (`0|[1-9][0-9]{0,128}`), too
//! long for `u128`. They are compared numerically without converting: a shorter number is smaller,
//! and numbers of equal length compare character by character. Within a shard, user records are
//! ordered by (sequence number, sub-sequence number), the sub-sequence number being the position of
//! a user record inside its aggregate (0 for a record that was not aggregated).

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::error::SequenceNumberError;

/// The most digits a sequence number may have.
pub const MAX_SEQUENCE_DIGITS: usize = 129;

/// A validated Kinesis sequence number, ordered numerically. Cloning is cheap (shared string).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SequenceNumber(Arc<str>);

impl SequenceNumber {
    /// Parses and validates a sequence number.
    pub fn parse(text: &str) -> Result<SequenceNumber, SequenceNumberError> {
        if text.is_empty() {
            return Err(SequenceNumberError::Empty);
        }
        if text.len() > MAX_SEQUENCE_DIGITS {
            return Err(SequenceNumberError::TooLong { digits: text.len() });
        }
        if let Some(position) = text.bytes().position(|b| !b.is_ascii_digit()) {
            return Err(SequenceNumberError::NotDecimal {
                input: text.to_owned(),
                position,
            });
        }
        if text.len() > 1 && text.starts_with('0') {
            return Err(SequenceNumberError::LeadingZero {
                input: text.to_owned(),
            });
        }
        Ok(SequenceNumber(Arc::from(text)))
    }

    /// The decimal digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Ord for SequenceNumber {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .len()
            .cmp(&other.0.len())
            .then_with(|| self.0.as_bytes().cmp(other.0.as_bytes()))
    }
}

impl PartialOrd for SequenceNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SequenceNumber({})", self.0)
    }
}

impl FromStr for SequenceNumber {
    type Err = SequenceNumberError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SequenceNumber::parse(s)
    }
}

/// The position of one user record in a shard: its Kinesis record's sequence number and its index
/// inside that record's aggregate. Ordered by sequence number, then sub-sequence number.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExtendedSequenceNumber {
    /// The sequence number of the Kinesis record that carried the user record.
    pub sequence: SequenceNumber,
    /// The user record's index inside its aggregate; 0 for a record that was not aggregated.
    pub sub_sequence: u64,
}

impl ExtendedSequenceNumber {
    /// A position from its two parts.
    pub fn new(sequence: SequenceNumber, sub_sequence: u64) -> Self {
        ExtendedSequenceNumber {
            sequence,
            sub_sequence,
        }
    }
}

impl fmt::Display for ExtendedSequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.sequence, self.sub_sequence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(s: &str) -> SequenceNumber {
        SequenceNumber::parse(s).unwrap()
    }

    #[test]
    fn orders_numerically_not_lexicographically() {
        assert!(seq("9") < seq("10"));
        assert!(seq("10") < seq("11"));
        assert!(seq("0") < seq("1"));
        let real_a = "49590338271490256608559692538361571095921575989136588898";
        let real_b = "49590338271490256608559692540925702759324208523137515618";
        assert!(seq(real_a) < seq(real_b));
        assert_eq!(seq(real_a).cmp(&seq(real_a)), Ordering::Equal);
    }

    #[test]
    fn agrees_with_u128_order_where_it_fits() {
        let values = [0u128, 1, 9, 10, 99, 100, 12345, u64::MAX as u128, u128::MAX];
        for a in values {
            for b in values {
                assert_eq!(
                    seq(&a.to_string()).cmp(&seq(&b.to_string())),
                    a.cmp(&b),
                    "{a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn rejects_malformed_sequence_numbers() {
        assert_eq!(SequenceNumber::parse(""), Err(SequenceNumberError::Empty));
        assert!(matches!(
            SequenceNumber::parse("012"),
            Err(SequenceNumberError::LeadingZero { .. })
        ));
        assert!(matches!(
            SequenceNumber::parse("12x"),
            Err(SequenceNumberError::NotDecimal { position: 2, .. })
        ));
        assert!(SequenceNumber::parse(&"9".repeat(129)).is_ok());
        assert_eq!(
            SequenceNumber::parse(&"9".repeat(130)),
            Err(SequenceNumberError::TooLong { digits: 130 })
        );
    }

    #[test]
    fn extended_orders_by_sequence_then_sub_sequence() {
        let a = ExtendedSequenceNumber::new(seq("100"), 5);
        let b = ExtendedSequenceNumber::new(seq("100"), 6);
        let c = ExtendedSequenceNumber::new(seq("99"), 1000);
        assert!(c < a && a < b);
        assert_eq!(b.to_string(), "100/6");
    }
}
