//! Which shard owns a hash key: the open shards of one stream sorted by range, found through an
//! index of the key space's top bits; plus the range of every shard ever seen, to check where a
//! record really landed.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use kinesis_format::{HashKey, HashKeyRange};

use crate::kinesis::ShardInfo;

/// Numbers every shard of every stream the process sees, for cheap per-record look-ups.
static NEXT_SLOT: AtomicU64 = AtomicU64::new(0);

/// An open shard as the pipeline uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shard {
    pub(crate) id: Arc<str>,
    /// A number unique to this stream's shard in this process, kept across map refreshes: the
    /// aggregator's key for the shard's open aggregate.
    pub(crate) slot: u64,
}

/// A stream's shard map at one point in time.
#[derive(Debug, Default)]
pub(crate) struct ShardMap {
    /// Open shards, sorted by starting hash key.
    open: Vec<(HashKeyRange, Shard)>,
    /// The key space cut into `2^bits` equal buckets (at least four per open shard, at most
    /// 2^16): entry `b` is the first open shard whose range ends at or after bucket `b`'s first
    /// key, and a last entry holds `open.len()`. A key's owner lies between its bucket's entry
    /// and the next, usually the same shard: one look-up instead of a binary search whose
    /// branches random keys mispredict (about 30 ns a record at 64 shards).
    buckets: Vec<u32>,
    /// `128 - bits`: a key's bucket is `key >> shift`.
    shift: u32,
    /// Every shard seen in any listing, open or closed.
    known: HashMap<Arc<str>, HashKeyRange>,
}

impl ShardMap {
    /// A map of the given open shards, remembering the ranges of `previous`'s shards too.
    pub(crate) fn new(open_shards: Vec<ShardInfo>, previous: Option<&ShardMap>) -> ShardMap {
        let mut known = previous.map(|p| p.known.clone()).unwrap_or_default();
        let slot_of = |id: &str| {
            previous
                .and_then(|p| p.open.iter().find(|(_, s)| &*s.id == id))
                .map_or_else(
                    || NEXT_SLOT.fetch_add(1, Ordering::Relaxed),
                    |(_, s)| s.slot,
                )
        };
        let mut open: Vec<(HashKeyRange, Shard)> = open_shards
            .into_iter()
            .map(|s| {
                let id: Arc<str> = Arc::from(s.shard_id);
                known.insert(id.clone(), s.range);
                let slot = slot_of(&id);
                (s.range, Shard { id, slot })
            })
            .collect();
        open.sort_by_key(|(range, _)| range.start);
        let (buckets, shift) = buckets(&open);
        ShardMap {
            open,
            known,
            buckets,
            shift,
        }
    }

    /// Adds ranges from a listing of all shards (used when a record lands on an unknown shard).
    pub(crate) fn learn(&mut self, shards: &[ShardInfo]) {
        for s in shards {
            self.known.insert(Arc::from(s.shard_id.as_str()), s.range);
        }
    }

    /// The open shard owning `key`, if any (a map caught mid-reshard can have gaps).
    pub(crate) fn predict(&self, key: HashKey) -> Option<&Shard> {
        // A map without buckets (the default, with no shards) searches all of its shards.
        let bucket = usize::try_from(key.0 >> self.shift).unwrap_or(usize::MAX);
        let (lo, hi) = match (self.buckets.get(bucket), self.buckets.get(bucket + 1)) {
            (Some(&lo), Some(&hi)) => (lo as usize, hi as usize),
            _ => (0, self.open.len()),
        };
        let i = lo + self.open[lo..hi].partition_point(|(range, _)| range.end < key);
        self.open
            .get(i)
            .filter(|(range, _)| range.contains(key))
            .map(|(_, shard)| shard)
    }

    /// The range of any shard ever seen.
    pub(crate) fn range_of(&self, shard_id: &str) -> Option<HashKeyRange> {
        self.known.get(shard_id).copied()
    }

    /// Whether the shard is open in this map.
    pub(crate) fn is_open(&self, shard_id: &str) -> bool {
        self.open.iter().any(|(_, s)| &*s.id == shard_id)
    }

    /// How many open shards the map has.
    #[cfg(test)]
    pub(crate) fn open_shards(&self) -> usize {
        self.open.len()
    }
}

/// The bucket index of a sorted shard list (see [`ShardMap::buckets`]).
fn buckets(open: &[(HashKeyRange, Shard)]) -> (Vec<u32>, u32) {
    let wanted = (open.len().max(1) * 4).next_power_of_two().min(1 << 16);
    let bits = wanted.trailing_zeros();
    let shift = 128 - bits;
    let mut buckets = Vec::with_capacity(wanted + 1);
    let mut i = 0;
    for b in 0..wanted as u128 {
        let first_key = b << shift;
        while i < open.len() && open[i].0.end.0 < first_key {
            i += 1;
        }
        buckets.push(u32::try_from(i).unwrap_or(u32::MAX));
    }
    buckets.push(u32::try_from(open.len()).unwrap_or(u32::MAX));
    (buckets, shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str, start: u128, end: u128) -> ShardInfo {
        ShardInfo {
            shard_id: id.into(),
            range: HashKeyRange::new(HashKey(start), HashKey(end)).unwrap(),
        }
    }

    #[test]
    fn predicts_the_owner_at_every_boundary() {
        // Out of order on purpose: the map sorts.
        let map = ShardMap::new(
            vec![
                shard("c", 200, u128::MAX),
                shard("a", 0, 99),
                shard("b", 100, 199),
            ],
            None,
        );
        let owner = |k: u128| map.predict(HashKey(k)).map(|s| s.id.to_string());
        assert_eq!(owner(0).as_deref(), Some("a"));
        assert_eq!(owner(99).as_deref(), Some("a"));
        assert_eq!(owner(100).as_deref(), Some("b"));
        assert_eq!(owner(199).as_deref(), Some("b"));
        assert_eq!(owner(200).as_deref(), Some("c"));
        assert_eq!(owner(u128::MAX).as_deref(), Some("c"));
    }

    #[test]
    fn the_bucket_index_finds_what_a_binary_search_finds() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for round in 0..200 {
            // A random map: cut points anywhere (some very close together, as after many
            // splits of one shard), and now and then a gap (a map caught mid-reshard).
            let cuts = rng.random_range(0..(if round % 10 == 0 { 3000 } else { 40 }));
            let mut points: Vec<u128> = (0..cuts)
                .map(|i| {
                    if i % 3 == 0 {
                        (1u128 << 100) + rng.random_range(0..1_000u128)
                    } else {
                        rng.random()
                    }
                })
                .collect();
            points.sort_unstable();
            points.dedup();
            let mut shards = Vec::new();
            let mut start = 0u128;
            for (n, &cut) in points.iter().chain([&u128::MAX]).enumerate() {
                if cut < start {
                    continue;
                }
                if !rng.random_bool(0.05) {
                    shards.push(shard(&format!("s{n}"), start, cut));
                }
                start = cut.saturating_add(1);
            }
            let map = ShardMap::new(shards, None);
            let naive = |key: u128| {
                map.open
                    .iter()
                    .find(|(r, _)| r.contains(HashKey(key)))
                    .map(|(_, s)| s.id.clone())
            };
            let mut keys: Vec<u128> = (0..300).map(|_| rng.random()).collect();
            keys.extend(
                points
                    .iter()
                    .flat_map(|&p| [p, p.wrapping_add(1)])
                    .take(300),
            );
            keys.extend([0, u128::MAX, 1u128 << 100]);
            for key in keys {
                assert_eq!(
                    map.predict(HashKey(key)).map(|s| s.id.clone()),
                    naive(key),
                    "round {round}, key {key}"
                );
            }
        }
    }

    #[test]
    fn an_empty_map_predicts_nothing() {
        assert_eq!(ShardMap::default().predict(HashKey(5)), None);
        assert_eq!(ShardMap::new(Vec::new(), None).predict(HashKey::MAX), None);
    }

    #[test]
    fn a_gap_predicts_nothing() {
        let map = ShardMap::new(vec![shard("a", 0, 99), shard("c", 200, u128::MAX)], None);
        assert_eq!(map.predict(HashKey(150)), None);
        assert!(map.predict(HashKey(250)).is_some());
    }

    #[test]
    fn remembers_ranges_of_shards_no_longer_open() {
        let before = ShardMap::new(vec![shard("parent", 0, u128::MAX)], None);
        let after = ShardMap::new(
            vec![shard("left", 0, 99), shard("right", 100, u128::MAX)],
            Some(&before),
        );
        assert_eq!(after.open_shards(), 2);
        assert_eq!(after.range_of("parent").map(|r| r.end), Some(HashKey::MAX));
        assert_eq!(after.range_of("left").map(|r| r.end), Some(HashKey(99)));
        assert_eq!(after.range_of("nope"), None);
        let slot = |m: &ShardMap, k: u128| m.predict(HashKey(k)).map(|s| s.slot);
        let again = ShardMap::new(
            vec![shard("left", 0, 99), shard("right", 100, u128::MAX)],
            Some(&after),
        );
        assert_eq!(slot(&again, 5), slot(&after, 5), "a shard keeps its slot");
        assert_ne!(slot(&after, 5), slot(&after, 500));
        assert_ne!(
            slot(&after, 5),
            slot(&before, 5),
            "a new shard gets a new slot"
        );
    }
}
