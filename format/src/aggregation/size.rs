//! Exact protobuf sizes of the parts of an `AggregatedRecord`, so an encoder knows the final
//! length before it adds a record.

/// Bytes a base-128 varint takes for `value`.
pub(crate) const fn varint_len(value: u64) -> usize {
    // 1 byte per started group of 7 bits, at least 1.
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Bytes a length-delimited field (one-byte tag, length varint, payload) takes.
pub(crate) const fn delimited_len(payload_len: usize) -> usize {
    1 + varint_len(payload_len as u64) + payload_len
}

/// Bytes a `Record` message body takes (without its own tag and length).
pub(crate) const fn record_body_len(
    partition_key_index: u64,
    explicit_hash_key_index: Option<u64>,
    data_len: usize,
) -> usize {
    let ehk = match explicit_hash_key_index {
        Some(index) => 1 + varint_len(index),
        None => 0,
    };
    1 + varint_len(partition_key_index) + ehk + delimited_len(data_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_lengths_at_boundaries() {
        let cases = [
            (0u64, 1usize),
            (1, 1),
            (127, 1),
            (128, 2),
            (16_383, 2),
            (16_384, 3),
            (u32::MAX as u64, 5),
            (u64::MAX, 10),
        ];
        for (value, len) in cases {
            assert_eq!(varint_len(value), len, "{value}");
            assert_eq!(prost::encoding::encoded_len_varint(value), len, "{value}");
        }
    }
}
