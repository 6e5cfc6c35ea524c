//! Runs every case of the shared aggregation vectors (made by the Python and Node reference
//! aggregators): decode both blobs, and encode the input to the Python bytes.
//!
//! The file comes from `KINESIS_AGG_VECTORS`, else `../shared/vectors/aggregation/cases.json`
//! beside the workspace root. A missing file fails the test: it must never pass by skipping.

use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use kinesis_format::{AggregateBuilder, Deaggregated, HashKey, deaggregate};
use serde::Deserialize;

#[derive(Deserialize)]
struct File {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    user_records: Vec<UserRecord>,
    python: Output,
    node: Output,
}

#[derive(Deserialize, Clone, Debug, PartialEq)]
struct UserRecord {
    partition_key: String,
    #[serde(default)]
    explicit_hash_key: Option<String>,
    data: String,
}

#[derive(Deserialize)]
struct Output {
    partition_key: String,
    explicit_hash_key: Option<String>,
    aggregated: String,
    decoded_matches_input: bool,
    decoded: Option<Vec<UserRecord>>,
}

fn vectors_path() -> PathBuf {
    match std::env::var_os("KINESIS_AGG_VECTORS") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/vectors/aggregation/cases.json"),
    }
}

fn load() -> Vec<Case> {
    let path = vectors_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "aggregation vectors not found at {}: {e}. Set KINESIS_AGG_VECTORS to the cases.json path",
            path.display()
        )
    });
    let file: File = serde_json::from_str(&text).expect("cases.json parses");
    assert!(!file.cases.is_empty(), "no cases in {}", path.display());
    file.cases
}

fn decode_blob(case: &str, who: &str, blob: &str) -> Vec<UserRecord> {
    let bytes = Bytes::from(B64.decode(blob).expect("base64"));
    match deaggregate(&bytes) {
        Deaggregated::Aggregated(records) => records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                assert_eq!(r.sub_sequence_number, i as u64);
                UserRecord {
                    partition_key: r.partition_key.to_string(),
                    explicit_hash_key: r.explicit_hash_key.as_deref().map(str::to_owned),
                    data: B64.encode(&r.data),
                }
            })
            .collect(),
        Deaggregated::Raw(reason) => panic!("{case}/{who}: not decoded as aggregate: {reason:?}"),
    }
}

#[test]
fn decodes_both_reference_aggregators() {
    let cases = load();
    for case in &cases {
        for (who, out) in [("python", &case.python), ("node", &case.node)] {
            let expected = if out.decoded_matches_input {
                &case.user_records
            } else {
                out.decoded.as_ref().expect("decoded given when it differs")
            };
            let got = decode_blob(&case.name, who, &out.aggregated);
            assert_eq!(
                got.len(),
                expected.len(),
                "{}/{who}: record count",
                case.name
            );
            for (i, (g, e)) in got.iter().zip(expected).enumerate() {
                assert_eq!(g, e, "{}/{who}: record {i}", case.name);
            }
        }
    }
}

#[test]
fn encodes_bytes_identical_to_python() {
    for case in load() {
        let mut builder = AggregateBuilder::new();
        for r in &case.user_records {
            let data = Bytes::from(B64.decode(&r.data).expect("base64"));
            let predicted = builder.framed_len_with(
                &r.partition_key,
                r.explicit_hash_key.as_deref(),
                data.len(),
            );
            builder.add(&r.partition_key, r.explicit_hash_key.as_deref(), data);
            assert_eq!(
                builder.framed_len(),
                predicted,
                "{}: size prediction",
                case.name
            );
        }
        let ours = builder.finish();
        let python = B64.decode(&case.python.aggregated).expect("base64");
        assert_eq!(ours.len(), python.len(), "{}: length", case.name);
        assert!(
            ours[..] == python[..],
            "{}: bytes differ from python",
            case.name
        );
    }
}

#[test]
fn reference_outer_keys_follow_the_first_record() {
    // The aggregate's own keys: the first user record's partition key, and its explicit hash key
    // when it has one. This is where the producer must route an aggregate.
    for case in load() {
        let first = &case.user_records[0];
        assert_eq!(
            case.python.partition_key, first.partition_key,
            "{}",
            case.name
        );
        if let Some(ehk) = &case.python.explicit_hash_key {
            let expected =
                HashKey::for_record(&first.partition_key, first.explicit_hash_key.as_deref())
                    .expect("valid key");
            assert_eq!(HashKey::parse_explicit(ehk), Ok(expected), "{}", case.name);
        }
        assert_eq!(
            case.node.explicit_hash_key, case.python.explicit_hash_key,
            "{}",
            case.name
        );
    }
}
