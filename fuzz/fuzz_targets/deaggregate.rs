//! Fuzzes the deaggregator: any input must classify without panicking, sub-sequence numbers must
//! run 0..n-1, every record's data must lie inside the input, and a decoded aggregate re-encoded
//! from its records must decode to the same records. A page of blobs (the input and its two
//! halves) must deaggregate as each blob does alone.
#![no_main]

use bytes::Bytes;
use kinesis_format::{AggregateBuilder, Deaggregated, deaggregate, deaggregate_all};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let blob = Bytes::copy_from_slice(input);
    let (head, tail) = (blob.slice(..blob.len() / 2), blob.slice(blob.len() / 2..));
    let page = [blob.clone(), head, tail];
    let alone: Vec<Deaggregated> = page.iter().map(deaggregate).collect();
    assert_eq!(deaggregate_all(&page), alone);
    let Deaggregated::Aggregated(records) = deaggregate(&blob) else {
        return;
    };
    let range = blob.as_ptr_range();
    let mut builder = AggregateBuilder::new();
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.sub_sequence_number, i as u64);
        if !r.data.is_empty() {
            assert!(range.contains(&r.data.as_ptr()), "data is not a slice of the input");
        }
        let _ = r.hash_key();
        builder.add(&r.partition_key, r.explicit_hash_key.as_deref(), r.data.clone());
    }
    let predicted = builder.framed_len();
    let again = builder.finish();
    assert_eq!(again.len(), predicted);
    match deaggregate(&again) {
        Deaggregated::Aggregated(round) if !round.is_empty() || records.is_empty() => {
            assert_eq!(round.len(), records.len());
            for (a, b) in round.iter().zip(&records) {
                assert_eq!((&a.partition_key, &a.explicit_hash_key, &a.data), (&b.partition_key, &b.explicit_hash_key, &b.data));
            }
        }
        // An aggregate of zero records re-encodes to framing alone, which is raw by definition.
        Deaggregated::Raw(_) => assert!(records.is_empty()),
        Deaggregated::Aggregated(_) => unreachable!("non-empty input re-encoded to nothing"),
    }
});
