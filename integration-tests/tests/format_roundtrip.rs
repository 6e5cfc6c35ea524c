//! The aggregation format against a real Kinesis endpoint: aggregates built with
//! `kinesis-format`, routed by explicit hash key, put with PutRecords, read back with GetRecords
//! and deaggregated give exactly the user records that went in, each on the shard that owns it.

use std::collections::BTreeMap;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use bytes::Bytes;
use integration_tests::TestEnv;
use integration_tests::read::{all_records, shard_range};
use kinesis_format::{AggregateBuilder, HashKey, HashKeyRange};
use rand::{Rng, SeedableRng, rngs::StdRng};

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct UserRecord {
    partition_key: String,
    explicit_hash_key: Option<String>,
    data: Bytes,
}

impl UserRecord {
    fn hash_key(&self) -> HashKey {
        HashKey::for_record(&self.partition_key, self.explicit_hash_key.as_deref())
            .expect("test keys are valid")
    }
}

fn random_records(rng: &mut StdRng, n: usize) -> Vec<UserRecord> {
    (0..n)
        .map(|i| {
            let len = rng.random_range(10..=2048);
            let mut data = vec![0u8; len];
            rng.fill(&mut data[..]);
            UserRecord {
                partition_key: format!("key-{}", rng.random::<u32>()),
                // Every 7th record is routed by explicit hash key instead.
                explicit_hash_key: (i % 7 == 0).then(|| rng.random::<u128>().to_string()),
                data: Bytes::from(data),
            }
        })
        .collect()
}

/// A Kinesis record to put: the aggregate (or raw record) and where it must land.
struct Entry {
    shard_id: String,
    entry: PutRecordsRequestEntry,
}

fn aggregate_entries(shard_id: &str, records: &[UserRecord], limit: usize) -> Vec<Entry> {
    let mut entries = Vec::new();
    let mut builder = AggregateBuilder::new();
    let mut first: Option<HashKey> = None;
    let flush = |builder: AggregateBuilder, first: HashKey| Entry {
        shard_id: shard_id.to_owned(),
        entry: PutRecordsRequestEntry::builder()
            .partition_key("a")
            .explicit_hash_key(first.to_string())
            .data(Blob::new(builder.finish().to_vec()))
            .build()
            .expect("entry"),
    };
    for r in records {
        let ehk = r.explicit_hash_key.as_deref();
        if !builder.is_empty()
            && builder.framed_len_with(&r.partition_key, ehk, r.data.len()) > limit
        {
            let full = std::mem::take(&mut builder);
            entries.push(flush(full, first.take().expect("non-empty aggregate")));
        }
        first.get_or_insert(r.hash_key());
        builder.add(&r.partition_key, ehk, r.data.clone());
        assert!(
            builder.framed_len() <= limit,
            "a single record exceeds the limit"
        );
    }
    if let Some(first) = first {
        entries.push(flush(builder, first));
    }
    entries
}

#[tokio::test]
async fn aggregates_put_and_read_back_give_the_same_user_records() {
    let env = TestEnv::new().await;
    let stream = env.create_stream(4).await;
    let shards: Vec<(String, HashKeyRange)> = stream
        .open_shards()
        .await
        .iter()
        .map(|s| (s.shard_id().to_owned(), shard_range(s)))
        .collect();
    assert_eq!(shards.len(), 4);

    let mut rng = StdRng::seed_from_u64(rand::rng().random());
    let aggregated = random_records(&mut rng, 3000);
    // Raw records are routed by partition key only: GetRecords does not return an explicit hash
    // key, so the shard-range check below could not be made for them.
    let mut raw = random_records(&mut rng, 40);
    raw.iter_mut().for_each(|r| r.explicit_hash_key = None);

    // Route each user record to the shard that owns its hash key, then aggregate per shard.
    let mut entries = Vec::new();
    for (shard_id, range) in &shards {
        let mine: Vec<UserRecord> = aggregated
            .iter()
            .filter(|r| range.contains(r.hash_key()))
            .cloned()
            .collect();
        entries.extend(aggregate_entries(shard_id, &mine, 51_200));
    }
    let aggregates = entries.len();
    for r in &raw {
        let owner = shards
            .iter()
            .find(|(_, range)| range.contains(r.hash_key()))
            .expect("some shard owns every key");
        entries.push(Entry {
            shard_id: owner.0.clone(),
            entry: PutRecordsRequestEntry::builder()
                .partition_key(&r.partition_key)
                .set_explicit_hash_key(r.explicit_hash_key.clone())
                .data(Blob::new(r.data.to_vec()))
                .build()
                .expect("entry"),
        });
    }

    // PutRecords: at most 500 entries and well under 5 MiB per call.
    let mut batch: Vec<&Entry> = Vec::new();
    let mut batch_bytes = 0;
    let mut put_calls = 0;
    for (i, e) in entries.iter().enumerate() {
        batch_bytes += e.entry.data().as_ref().len() + e.entry.partition_key().len();
        batch.push(e);
        let last = i + 1 == entries.len();
        if last || batch.len() == 500 || batch_bytes > 4 * 1024 * 1024 {
            let out = stream
                .kinesis()
                .put_records()
                .stream_name(&stream.name)
                .set_records(Some(batch.iter().map(|e| e.entry.clone()).collect()))
                .send()
                .await
                .expect("PutRecords");
            assert_eq!(out.failed_record_count(), Some(0), "no record may fail");
            for (sent, result) in batch.iter().zip(out.records()) {
                assert_eq!(
                    result.shard_id(),
                    Some(sent.shard_id.as_str()),
                    "landed on the predicted shard"
                );
            }
            put_calls += 1;
            batch.clear();
            batch_bytes = 0;
        }
    }
    eprintln!(
        "{aggregates} aggregates + {} raw records in {put_calls} PutRecords calls",
        raw.len()
    );

    let mut read_back = Vec::new();
    let mut per_shard = BTreeMap::new();
    for (shard, range, records) in all_records(&stream).await {
        for r in &records {
            assert!(
                range.contains(r.hash_key()),
                "user record with hash key {} read from shard {} that owns {range:?}",
                r.hash_key(),
                shard.shard_id()
            );
        }
        per_shard.insert(shard.shard_id().to_owned(), records.len());
        read_back.extend(records);
    }
    assert_eq!(
        read_back.iter().filter(|r| !r.aggregated).count(),
        raw.len()
    );
    assert_eq!(
        read_back.iter().filter(|r| r.aggregated).count(),
        aggregated.len()
    );

    // Same multiset of (partition key, data). Raw records carry no explicit hash key on read.
    let key = |pk: &str, data: &Bytes| (pk.to_owned(), data.clone());
    let mut expected: Vec<_> = aggregated
        .iter()
        .chain(&raw)
        .map(|r| key(&r.partition_key, &r.data))
        .collect();
    let mut got: Vec<_> = read_back
        .iter()
        .map(|r| key(&r.partition_key, &r.data))
        .collect();
    expected.sort();
    got.sort();
    assert!(
        expected == got,
        "read-back multiset differs from what was put"
    );

    // Aggregated records keep their explicit hash keys.
    let with_ehk = read_back
        .iter()
        .filter(|r| r.explicit_hash_key.is_some())
        .count();
    assert_eq!(
        with_ehk,
        aggregated
            .iter()
            .filter(|r| r.explicit_hash_key.is_some())
            .count()
    );
    eprintln!("user records per shard: {per_shard:?}");
}

#[tokio::test]
async fn an_aggregate_with_a_corrupted_digest_reads_back_raw_and_intact() {
    let env = TestEnv::new().await;
    let stream = env.create_stream(1).await;
    let mut builder = AggregateBuilder::new();
    builder.add("p", None, Bytes::from_static(b"inner-1"));
    builder.add("q", None, Bytes::from_static(b"inner-2"));
    let mut corrupted = builder.finish().to_vec();
    *corrupted.last_mut().expect("non-empty") ^= 0xff;
    stream
        .kinesis()
        .put_record()
        .stream_name(&stream.name)
        .partition_key("outer")
        .data(Blob::new(corrupted.clone()))
        .send()
        .await
        .expect("PutRecord");
    let read: Vec<_> = all_records(&stream)
        .await
        .into_iter()
        .flat_map(|(_, _, r)| r)
        .collect();
    assert_eq!(read.len(), 1);
    assert!(!read[0].aggregated);
    assert_eq!(read[0].partition_key, "outer");
    assert_eq!(&read[0].data[..], &corrupted[..]);
}
