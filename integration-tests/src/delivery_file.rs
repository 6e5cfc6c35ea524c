//! The delivery files the `kcl_worker` binary writes, and the checks of the consumer's promise on
//! them: every stored record delivered; for every partition key, first deliveries in stored order
//! across the shard lineage; within a processor session, positions strictly increasing; and
//! duplicates only from sessions that delivered the record but never checkpointed at or after it
//! (killed, or having lost the lease, first): of a record's deliveries at one stored position, at
//! most one is in a session that went on to checkpoint it.
//!
//! A record can be stored twice: after a reshard the producer re-sends every record of an
//! aggregate that landed on a shard not owning all of them (a Java KCL drops such an aggregate
//! whole), and this crate's consumer delivers the owned records of both copies. Those are
//! counted apart (`second_copies`), and a record's place in its key's order is its earliest copy.
//!
//! Lines (tab-separated): `D session shard key sequence sub data nanos` for a delivery,
//! `C session shard sequence sub` for a stored checkpoint. An unfinished last line (a process
//! killed mid-write) is ignored.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use kinesis_format::{ExtendedSequenceNumber, SequenceNumber};

/// One delivered record.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// Worker id, process id and processor number.
    pub session: String,
    /// The shard.
    pub shard: String,
    /// Partition key.
    pub key: String,
    /// Position in the shard.
    pub position: ExtendedSequenceNumber,
    /// The record's data (its unique number).
    pub data: String,
    /// When, in nanoseconds since the epoch.
    pub at: u128,
    /// Which file and line, to order deliveries of one batch.
    pub order: (usize, usize),
}

/// One stored checkpoint.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// The session that stored it.
    pub session: String,
    /// The shard.
    pub shard: String,
    /// The position.
    pub position: ExtendedSequenceNumber,
}

/// Everything the files say.
#[derive(Clone, Debug, Default)]
pub struct Deliveries {
    /// In file order.
    pub deliveries: Vec<Delivery>,
    /// In file order.
    pub checkpoints: Vec<Checkpoint>,
}

fn position(seq: &str, sub: &str) -> Option<ExtendedSequenceNumber> {
    Some(ExtendedSequenceNumber::new(
        SequenceNumber::parse(seq).ok()?,
        sub.parse().ok()?,
    ))
}

impl Deliveries {
    /// Reads every file.
    pub fn read(paths: &[impl AsRef<Path>]) -> Deliveries {
        let mut out = Deliveries::default();
        for (file, path) in paths.iter().enumerate() {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let complete = text.rfind('\n').map_or("", |end| &text[..end]);
            for (line, l) in complete.lines().enumerate() {
                let f: Vec<&str> = l.split('\t').collect();
                match f.as_slice() {
                    ["D", session, shard, key, seq, sub, data, at] => {
                        out.deliveries.push(Delivery {
                            session: (*session).to_owned(),
                            shard: (*shard).to_owned(),
                            key: (*key).to_owned(),
                            position: position(seq, sub).expect("delivery position"),
                            data: (*data).to_owned(),
                            at: at.parse().expect("nanos"),
                            order: (file, line),
                        })
                    }
                    ["C", session, shard, seq, sub] => out.checkpoints.push(Checkpoint {
                        session: (*session).to_owned(),
                        shard: (*shard).to_owned(),
                        position: position(seq, sub).expect("checkpoint position"),
                    }),
                    _ => panic!("unreadable delivery line: {l:?}"),
                }
            }
        }
        out
    }
}

/// A record as the producer stored it.
#[derive(Clone, Debug)]
pub struct Stored {
    /// Partition key.
    pub key: String,
    /// Its unique data.
    pub data: String,
    /// Where it was stored.
    pub shard: String,
    /// Its position there.
    pub position: ExtendedSequenceNumber,
}

/// What the checks found.
#[derive(Clone, Debug, Default)]
pub struct Verdict {
    /// Stored records never delivered.
    pub never_delivered: Vec<String>,
    /// Keys whose first deliveries broke stored order (with the pair).
    pub out_of_order: Vec<String>,
    /// Sessions that delivered a position not after the one before it.
    pub session_regressions: Vec<String>,
    /// Deliveries beyond the first of one stored copy.
    pub duplicates: usize,
    /// Records delivered from more than one stored copy (the producer stored them twice).
    pub second_copies: usize,
    /// Records delivered at one position by more than one session that checkpointed them.
    pub unexplained_duplicates: Vec<String>,
    /// Pairs of records compared for order.
    pub ordered_pairs: usize,
}

impl Verdict {
    /// Whether every check passed.
    pub fn ok(&self) -> bool {
        self.never_delivered.is_empty()
            && self.out_of_order.is_empty()
            && self.session_regressions.is_empty()
            && self.unexplained_duplicates.is_empty()
    }
}

/// Checks `got` against what was `stored`; `parents` maps each shard to its parents.
pub fn verify(
    stored: &[Stored],
    got: &Deliveries,
    parents: &HashMap<String, Vec<String>>,
) -> Verdict {
    let mut verdict = Verdict::default();
    let mut by_data: HashMap<&str, Vec<&Delivery>> = HashMap::new();
    for d in &got.deliveries {
        by_data.entry(d.data.as_str()).or_default().push(d);
    }
    let first = |data: &str| {
        by_data
            .get(data)
            .and_then(|ds| ds.iter().min_by_key(|d| (d.at, d.order)).copied())
    };

    // Per session: strictly increasing positions.
    let mut last: HashMap<(&str, &str), &ExtendedSequenceNumber> = HashMap::new();
    for d in &got.deliveries {
        if let Some(prev) = last.insert((&d.session, &d.shard), &d.position)
            && *prev >= d.position
        {
            verdict.session_regressions.push(format!(
                "{} {}: {prev} then {}",
                d.session, d.shard, d.position
            ));
        }
    }

    // Duplicates: at most one delivering session checkpointed the record.
    let mut checkpointed: HashMap<(&str, &str), &ExtendedSequenceNumber> = HashMap::new();
    for c in &got.checkpoints {
        let e = checkpointed
            .entry((&c.session, &c.shard))
            .or_insert(&c.position);
        if c.position > **e {
            *e = &c.position;
        }
    }
    let mut by_copy: HashMap<(&str, &str, &ExtendedSequenceNumber), Vec<&Delivery>> =
        HashMap::new();
    for d in &got.deliveries {
        by_copy
            .entry((d.data.as_str(), d.shard.as_str(), &d.position))
            .or_default()
            .push(d);
    }
    for ds in by_data.values() {
        let copies: std::collections::HashSet<_> =
            ds.iter().map(|d| (&d.shard, &d.position)).collect();
        verdict.second_copies += usize::from(copies.len() > 1);
    }
    for ((data, shard, position), ds) in &by_copy {
        verdict.duplicates += ds.len() - 1;
        let checkpointing: Vec<&str> = ds
            .iter()
            .filter(|d| {
                checkpointed
                    .get(&(d.session.as_str(), d.shard.as_str()))
                    .is_some_and(|c| **c >= d.position)
            })
            .map(|d| d.session.as_str())
            .collect();
        if checkpointing.len() > 1 {
            verdict.unexplained_duplicates.push(format!(
                "record {data} at {shard} {position} delivered {} times, and checkpointed by each of {checkpointing:?}",
                ds.len(),
            ));
        }
    }

    // Lineage depth: a key's shards form a chain, ancestors first.
    fn depth(shard: &str, parents: &HashMap<String, Vec<String>>) -> usize {
        parents.get(shard).map_or(0, |ps| {
            ps.iter().map(|p| 1 + depth(p, parents)).max().unwrap_or(0)
        })
    }
    let mut per_key: BTreeMap<&str, Vec<&Stored>> = BTreeMap::new();
    for s in stored {
        per_key.entry(s.key.as_str()).or_default().push(s);
        if first(&s.data).is_none() {
            verdict.never_delivered.push(s.data.clone());
        }
    }
    // A record's place: its earliest stored copy (the one reported, or one delivered).
    let place = |s: &Stored| -> (usize, ExtendedSequenceNumber) {
        let copies = by_data.get(s.data.as_str()).into_iter().flatten();
        copies
            .map(|d| (depth(&d.shard, parents), &d.position))
            .chain([(depth(&s.shard, parents), &s.position)])
            .min()
            .map(|(depth, position)| (depth, position.clone()))
            .expect("the reported copy at least")
    };
    for (key, mut records) in per_key {
        records.sort_by_cached_key(|s| place(s));
        for pair in records.windows(2) {
            let (Some(a), Some(b)) = (first(&pair[0].data), first(&pair[1].data)) else {
                continue;
            };
            verdict.ordered_pairs += 1;
            let same_file = a.order.0 == b.order.0;
            let before = a.at < b.at || (a.at == b.at && (!same_file || a.order <= b.order));
            if !before {
                verdict.out_of_order.push(format!(
                    "{key}: {} ({} {}) first delivered after {} ({} {})",
                    pair[0].data,
                    pair[0].shard,
                    pair[0].position,
                    pair[1].data,
                    pair[1].shard,
                    pair[1].position
                ));
            }
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(seq: &str, sub: u64) -> ExtendedSequenceNumber {
        ExtendedSequenceNumber::new(SequenceNumber::parse(seq).unwrap(), sub)
    }

    fn stored(data: &str, shard: &str, seq: &str) -> Stored {
        Stored {
            key: "k".into(),
            data: data.into(),
            shard: shard.into(),
            position: pos(seq, 0),
        }
    }

    fn delivery(session: &str, shard: &str, seq: &str, data: &str, at: u128) -> Delivery {
        Delivery {
            session: session.into(),
            shard: shard.into(),
            key: "k".into(),
            position: pos(seq, 0),
            data: data.into(),
            at,
            order: (0, at as usize),
        }
    }

    fn checkpoint(session: &str, shard: &str, seq: &str) -> Checkpoint {
        Checkpoint {
            session: session.into(),
            shard: shard.into(),
            position: pos(seq, 0),
        }
    }

    #[test]
    fn each_check_can_fail() {
        // s1 is s0's child: the key's records 1, 2 on s0, then 3 on s1.
        let parents: HashMap<String, Vec<String>> =
            [("s1".to_owned(), vec!["s0".to_owned()])].into();
        let stored = vec![
            stored("1", "s0", "10"),
            stored("2", "s0", "20"),
            stored("3", "s1", "5"),
        ];
        let good = Deliveries {
            deliveries: vec![
                delivery("a", "s0", "10", "1", 1),
                delivery("a", "s0", "20", "2", 2),
                // Killed before its checkpoint: b delivers 2 again.
                delivery("b", "s0", "20", "2", 3),
                delivery("c", "s1", "5", "3", 4),
            ],
            checkpoints: vec![checkpoint("a", "s0", "10"), checkpoint("b", "s0", "20")],
        };
        let v = verify(&stored, &good, &parents);
        assert!(v.ok(), "{v:?}");
        assert_eq!((v.duplicates, v.ordered_pairs), (1, 2));

        let mut lost = good.clone();
        lost.deliveries.pop();
        assert_eq!(verify(&stored, &lost, &parents).never_delivered, ["3"]);

        let mut child_first = good.clone();
        child_first.deliveries[3].at = 0;
        assert_eq!(
            verify(&stored, &child_first, &parents).out_of_order.len(),
            1
        );

        let mut regression = good.clone();
        regression.deliveries.push(delivery("c", "s1", "5", "3", 5));
        assert_eq!(
            verify(&stored, &regression, &parents)
                .session_regressions
                .len(),
            1
        );

        let mut double = good.clone();
        double.checkpoints.push(checkpoint("a", "s0", "20"));
        assert_eq!(
            verify(&stored, &double, &parents)
                .unexplained_duplicates
                .len(),
            1
        );

        // The producer stored 3 twice on s1 (at 5, then re-sent at 7) and reported the second;
        // 4 was put after 3 and stored at 6. One session delivers both copies of 3 and
        // checkpoints: no unexplained duplicate, a second copy, and 4 after 3 is in order.
        let mut stored_twice = stored.clone();
        stored_twice[2].position = pos("7", 0);
        stored_twice.push(super::tests::stored("4", "s1", "6"));
        let mut twice = good.clone();
        twice.deliveries.push(delivery("c", "s1", "6", "4", 5));
        twice.deliveries.push(delivery("c", "s1", "7", "3", 6));
        twice.checkpoints.push(checkpoint("c", "s1", "7"));
        let v = verify(&stored_twice, &twice, &parents);
        assert!(v.ok(), "{v:?}");
        assert_eq!((v.second_copies, v.duplicates), (1, 1));
        // Delivering 4 before the first copy of 3 breaks the order.
        twice.deliveries[3].at = 7;
        twice.deliveries[3].order = (0, 7);
        assert_eq!(
            verify(&stored_twice, &twice, &parents).out_of_order.len(),
            1
        );
    }
}
