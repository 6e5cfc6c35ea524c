//! Encode and decode throughput of the aggregation format beside a bare MD5 of the same bytes.
//!
//! Every aggregate holds user records of one size (100 B or 1 KiB) with distinct 20-character
//! partition keys, filled up to the KPL default aggregate limit of 51,200 bytes. All three
//! functions of a group work on the same aggregate, so their bytes/s compare directly: MD5 of the
//! body is part of both encoding and decoding, so `md5` is an upper bound for both.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use kinesis_format::{AggregateBuilder, Deaggregated, HashKey, Unsealed, deaggregate};
use md5::{Digest, Md5};

const AGGREGATE_LIMIT: usize = 51_200;

fn records(size: usize) -> Vec<(String, Bytes)> {
    let mut out = Vec::new();
    let mut builder = AggregateBuilder::new();
    for i in 0.. {
        let key = format!("pk-{i:017}");
        let data = Bytes::from(vec![(i % 251) as u8; size]);
        if builder.framed_len_with(&key, None, size) > AGGREGATE_LIMIT {
            break;
        }
        builder.add(&key, None, data.clone());
        out.push((key, data));
    }
    out
}

fn encode(records: &[(String, Bytes)]) -> Bytes {
    let mut builder = AggregateBuilder::new();
    for (key, data) in records {
        builder.add(key, None, data.clone());
    }
    builder.finish()
}

fn bench(c: &mut Criterion) {
    for size in [100usize, 1024] {
        let records = records(size);
        let blob = encode(&records);
        eprintln!(
            "{size} B records: {} user records per aggregate, {} bytes per aggregate",
            records.len(),
            blob.len()
        );
        let mut group = c.benchmark_group(format!("aggregate_{size}B"));
        group.throughput(Throughput::Bytes(blob.len() as u64));
        group.bench_function("encode", |b| b.iter(|| encode(black_box(&records))));
        group.bench_function("decode", |b| {
            b.iter(|| match deaggregate(black_box(&blob)) {
                Deaggregated::Aggregated(r) => r.len(),
                Deaggregated::Raw(reason) => panic!("bench blob not an aggregate: {reason:?}"),
            })
        });
        group.bench_function("md5", |b| b.iter(|| Md5::digest(black_box(&blob[..]))));
        group.finish();

        // Sealing (the MD5 trailer) of eight such aggregates: one at a time, and all at once.
        let unsealed = {
            let mut builder = AggregateBuilder::new();
            for (key, data) in &records {
                builder.add(key, None, data.clone());
            }
            vec![builder.finish_unsealed(); 8]
        };
        let mut group = c.benchmark_group(format!("seal_8_aggregates_{size}B"));
        group.throughput(Throughput::Bytes(8 * blob.len() as u64));
        group.bench_function("one_at_a_time", |b| {
            b.iter_batched(
                || unsealed.clone(),
                |u| u.into_iter().map(Unsealed::seal).collect::<Vec<_>>(),
                BatchSize::SmallInput,
            )
        });
        group.bench_function("all_at_once", |b| {
            b.iter_batched(
                || unsealed.clone(),
                Unsealed::seal_all,
                BatchSize::SmallInput,
            )
        });
        group.finish();
    }
}

/// Partition-key hashing: one key at a time, and many at once.
fn hash_keys(c: &mut Criterion) {
    let keys: Vec<String> = (0..4096).map(|i| format!("{i:016x}")).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let mut group = c.benchmark_group("hash_4096_keys");
    group.throughput(Throughput::Elements(keys.len() as u64));
    group.bench_function("one_at_a_time", |b| {
        b.iter(|| {
            black_box(&refs)
                .iter()
                .map(|k| HashKey::from_partition_key(k))
                .collect::<Vec<_>>()
        })
    });
    group.bench_function("many_at_once", |b| {
        b.iter(|| HashKey::from_partition_keys(black_box(&refs)))
    });
    group.finish();
}

criterion_group!(benches, bench, hash_keys);
criterion_main!(benches);
