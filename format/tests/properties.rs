//! Property tests: round trips, exact size accounting, and no panic on any input.

use bytes::Bytes;
use kinesis_format::{
    AggregateBuilder, Deaggregated, HashKey, MAGIC, SequenceNumber, deaggregate, deaggregate_all,
};
use proptest::prelude::*;

#[derive(Clone, Debug)]
struct Input {
    partition_key: String,
    explicit_hash_key: Option<String>,
    data: Vec<u8>,
}

fn input() -> impl Strategy<Value = Input> {
    (
        // A small key alphabet so keys repeat and the tables de-duplicate.
        prop_oneof!["[a-c]{1,2}", "\\PC{1,40}", ".{200,256}"],
        prop::option::of(any::<u128>().prop_map(|k| k.to_string())),
        prop::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(partition_key, explicit_hash_key, data)| Input {
            partition_key,
            explicit_hash_key,
            data,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn round_trip_preserves_records_and_size(records in prop::collection::vec(input(), 1..60)) {
        let mut builder = AggregateBuilder::new();
        for r in &records {
            let predicted = builder.framed_len_with(&r.partition_key, r.explicit_hash_key.as_deref(), r.data.len());
            builder.add(&r.partition_key, r.explicit_hash_key.as_deref(), Bytes::from(r.data.clone()));
            prop_assert_eq!(builder.framed_len(), predicted);
        }
        let predicted = builder.framed_len();
        let blob = builder.finish();
        prop_assert_eq!(blob.len(), predicted);

        let Deaggregated::Aggregated(decoded) = deaggregate(&blob) else {
            return Err(TestCaseError::fail("encoded aggregate did not decode"));
        };
        prop_assert_eq!(decoded.len(), records.len());
        for (i, (d, r)) in decoded.iter().zip(&records).enumerate() {
            prop_assert_eq!(&*d.partition_key, r.partition_key.as_str());
            prop_assert_eq!(d.explicit_hash_key.as_deref(), r.explicit_hash_key.as_deref());
            prop_assert_eq!(&d.data[..], &r.data[..]);
            prop_assert_eq!(d.sub_sequence_number, i as u64);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = deaggregate(&Bytes::from(bytes));
    }

    #[test]
    fn arbitrary_bodies_with_valid_framing_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
        use md5::{Digest, Md5};
        let mut blob = MAGIC.to_vec();
        blob.extend_from_slice(&body);
        blob.extend_from_slice(&<[u8; 16]>::from(Md5::digest(&body)));
        // Anything may come back, but with a valid digest the only raw outcomes are parse errors.
        if let Deaggregated::Aggregated(records) = deaggregate(&Bytes::from(blob)) {
            for (i, r) in records.iter().enumerate() {
                prop_assert_eq!(r.sub_sequence_number, i as u64);
            }
        }
    }

    #[test]
    fn flipping_any_byte_of_an_aggregate_makes_it_raw(
        records in prop::collection::vec(input(), 1..8),
        position in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let mut builder = AggregateBuilder::new();
        for r in &records {
            builder.add(&r.partition_key, r.explicit_hash_key.as_deref(), Bytes::from(r.data.clone()));
        }
        let mut blob = builder.finish().to_vec();
        let i = position.index(blob.len());
        blob[i] ^= flip;
        prop_assert!(matches!(deaggregate(&Bytes::from(blob)), Deaggregated::Raw(_)));
    }

    #[test]
    fn a_page_deaggregates_like_each_blob_alone(
        blobs in prop::collection::vec(
            prop_oneof![
                // Valid aggregates, some with a byte flipped.
                (prop::collection::vec(input(), 1..6), any::<prop::sample::Index>(), 0u8..=255)
                    .prop_map(|(records, position, flip)| {
                        let mut builder = AggregateBuilder::new();
                        for r in &records {
                            builder.add(&r.partition_key, r.explicit_hash_key.as_deref(), &r.data);
                        }
                        let mut blob = builder.finish().to_vec();
                        let i = position.index(blob.len());
                        blob[i] ^= flip;
                        blob
                    }),
                // Anything, including short blobs and the bare magic.
                prop::collection::vec(any::<u8>(), 0..64),
                prop::collection::vec(any::<u8>(), 0..40).prop_map(|body| [&MAGIC[..], &body].concat()),
            ],
            0..20,
        )
    ) {
        let blobs: Vec<Bytes> = blobs.into_iter().map(Bytes::from).collect();
        let alone: Vec<Deaggregated> = blobs.iter().map(deaggregate).collect();
        prop_assert_eq!(deaggregate_all(&blobs), alone);
    }

    #[test]
    fn explicit_hash_keys_round_trip_through_text(k in any::<u128>()) {
        prop_assert_eq!(HashKey::parse_explicit(&k.to_string()), Ok(HashKey(k)));
    }

    #[test]
    fn sequence_order_matches_numeric_order(a in any::<u128>(), b in any::<u128>(), suffix in "[0-9]{0,40}") {
        // Append the same digits to both: the numeric order of a and b is kept.
        let sa = SequenceNumber::parse(&format!("{}{suffix}", a.saturating_add(1))).unwrap();
        let sb = SequenceNumber::parse(&format!("{}{suffix}", b.saturating_add(1))).unwrap();
        prop_assert_eq!(sa.cmp(&sb), a.saturating_add(1).cmp(&b.saturating_add(1)));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn try_add_never_exceeds_the_limit_and_a_refusal_changes_nothing(
        records in prop::collection::vec(input(), 1..80),
        limit in 20usize..4_000,
    ) {
        let mut builder = AggregateBuilder::new();
        let mut added = Vec::new();
        for r in &records {
            let before = builder.framed_len();
            let expected = builder.framed_len_with(&r.partition_key, r.explicit_hash_key.as_deref(), r.data.len());
            match builder.try_add(&r.partition_key, r.explicit_hash_key.as_deref(), Bytes::from(r.data.clone()), limit) {
                Ok(sub) => {
                    prop_assert!(expected <= limit);
                    prop_assert_eq!(builder.framed_len(), expected);
                    prop_assert_eq!(sub, added.len() as u64);
                    added.push(r.clone());
                }
                Err(data) => {
                    prop_assert!(expected > limit);
                    prop_assert_eq!(&data[..], &r.data[..]);
                    prop_assert_eq!(builder.framed_len(), before);
                }
            }
        }
        let blob = builder.finish();
        prop_assert!(blob.len() <= limit.max(20));
        if let Deaggregated::Aggregated(decoded) = deaggregate(&blob) {
            prop_assert_eq!(decoded.len(), added.len());
            for (d, r) in decoded.iter().zip(&added) {
                prop_assert_eq!(&d.data[..], &r.data[..]);
            }
        } else {
            prop_assert!(added.is_empty(), "a non-empty aggregate must decode");
        }
    }

    #[test]
    fn framed_len_of_one_matches_an_empty_builder(r in input()) {
        prop_assert_eq!(
            AggregateBuilder::framed_len_of_one(&r.partition_key, r.explicit_hash_key.as_deref(), r.data.len()),
            AggregateBuilder::new().framed_len_with(&r.partition_key, r.explicit_hash_key.as_deref(), r.data.len())
        );
    }
}
