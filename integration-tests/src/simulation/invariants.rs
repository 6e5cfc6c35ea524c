//! The fleet's invariants, as checks over what a run left: the journal, the lease table and the
//! store's checkpoint history. Each returns what broke, empty when nothing did.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use kcl::leases::{CheckpointPosition, Lease};
use kinesis_format::ExtendedSequenceNumber;

use super::journal::Entry;

/// Where a checkpoint stands: initial positions first, then records, then SHARD_END.
fn rank(p: &CheckpointPosition) -> (u8, Option<ExtendedSequenceNumber>) {
    match p {
        CheckpointPosition::Sequence {
            sequence,
            sub_sequence,
        } => (
            1,
            Some(ExtendedSequenceNumber::new(sequence.clone(), *sub_sequence)),
        ),
        CheckpointPosition::ShardEnd => (2, None),
        _ => (0, None),
    }
}

/// Checkpoints never move backwards: those that did, in store order.
pub fn checkpoint_regressions(checkpoints: &[(String, CheckpointPosition)]) -> Vec<String> {
    let mut last: HashMap<&str, &CheckpointPosition> = HashMap::new();
    let mut out = Vec::new();
    for (key, p) in checkpoints {
        if let Some(prev) = last.insert(key, p)
            && rank(p) < rank(prev)
        {
            out.push(format!("{key}: {prev} then {p}"));
        }
    }
    out
}

/// The single-processor bound, and how long two processors overlapped in practice.
#[derive(Debug, Default)]
pub struct Exclusivity {
    /// Batches a worker started for a shard after the store refused that worker's renewal of the
    /// shard's lease (in a processor session that began before the refusal).
    pub violations: Vec<String>,
    /// The longest time from a take to the last batch the previous owner started for the shard
    /// (the window in which two processors could both start batches).
    pub longest_overlap: Duration,
}

/// Checks the bound: once a worker's renewal of a shard's lease is refused because another worker
/// took it, that worker starts no further `process_records` call for the shard in any processor
/// session that existed at the refusal. (A call already running may finish; its checkpoint is
/// refused by the store's condition.)
pub fn exclusivity(entries: &[(Duration, Entry)]) -> Exclusivity {
    let mut init: HashMap<&str, usize> = HashMap::new();
    // Batch starts (journal index, time, session) per (worker, shard).
    type Starts<'a> = Vec<(usize, Duration, &'a str)>;
    let mut batches: HashMap<(&str, &str), Starts<'_>> = HashMap::new();
    let mut batches_by_shard: HashMap<&str, Vec<(usize, Duration, &str, &str)>> = HashMap::new();
    for (i, (at, e)) in entries.iter().enumerate() {
        match e {
            Entry::Initialized { session, .. } => {
                init.insert(session, i);
            }
            Entry::BatchStart {
                worker,
                session,
                shard,
            } => {
                batches
                    .entry((worker, shard))
                    .or_default()
                    .push((i, *at, session));
                batches_by_shard
                    .entry(shard)
                    .or_default()
                    .push((i, *at, worker, session));
            }
            _ => {}
        }
    }
    let began_before = |session: &str, i: usize| init.get(session).is_some_and(|&s| s < i);
    let mut out = Exclusivity::default();
    for (i, (at, e)) in entries.iter().enumerate() {
        match e {
            Entry::RenewRefused { worker, shard } => {
                for (j, bat, session) in batches.get(&(worker, shard)).into_iter().flatten() {
                    if *j > i && began_before(session, i) {
                        out.violations.push(format!(
                            "{worker} started a batch of {shard} in session {session} at {bat:?}, after its renewal was refused at {at:?}"
                        ));
                    }
                }
            }
            Entry::Took { worker, shard } => {
                for (j, bat, other, session) in
                    batches_by_shard.get(shard.as_str()).into_iter().flatten()
                {
                    if *j > i && *other != worker && began_before(session, i) {
                        out.longest_overlap = out.longest_overlap.max(*bat - *at);
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// How long a shard handed off gracefully may go without a processor: the new owner reads the
/// leases handed to it every half renew interval (500 ms here), and takes a released one at once.
pub const HANDOFF_TRANSIT: Duration = Duration::from_secs(1);

/// Open shards not being processed: each must have a lease owned by a running worker that has a
/// processor session for it that is initialised and not ended.
///
/// A shard handed off gracefully within the last [`HANDOFF_TRANSIT`] before `now` is in transit,
/// not unprocessed: its old owner has checkpointed and let go, and the new owner starts it at its
/// next poll.
pub fn unprocessed(
    open: &[String],
    leases: &[Lease],
    live: &HashSet<String>,
    entries: &[(Duration, Entry)],
    now: Duration,
) -> Vec<String> {
    let owner: HashMap<&str, Option<&str>> = leases
        .iter()
        .map(|l| (l.key.as_str(), l.actual_owner()))
        .collect();
    // The sessions running now, per (worker, shard).
    let mut active: HashMap<(&str, &str), HashSet<&str>> = HashMap::new();
    for (_, e) in entries {
        match e {
            Entry::Initialized {
                worker,
                session,
                shard,
            } => {
                active.entry((worker, shard)).or_default().insert(session);
            }
            Entry::Ended {
                worker,
                session,
                shard,
            } => {
                if let Some(s) = active.get_mut(&(worker.as_str(), shard.as_str())) {
                    s.remove(session.as_str());
                }
            }
            Entry::Crashed { worker } => active.retain(|(w, _), _| w != worker),
            _ => {}
        }
    }
    let in_transit: HashSet<&str> = entries
        .iter()
        .rev()
        .take_while(|(at, _)| now.saturating_sub(*at) <= HANDOFF_TRANSIT)
        .filter_map(|(_, e)| match e {
            Entry::HandedOff { shard, .. } => Some(shard.as_str()),
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    for shard in open {
        let shard = shard.as_str();
        if in_transit.contains(shard) {
            continue;
        }
        match owner.get(shard).copied().flatten() {
            None => out.push(format!("{shard}: no owner")),
            Some(w) if !live.contains(w) => out.push(format!("{shard}: owned by {w}, not running")),
            Some(w) if active.get(&(w, shard)).is_none_or(HashSet::is_empty) => {
                out.push(format!("{shard}: owned by {w}, no processor running"))
            }
            Some(_) => {}
        }
    }
    out
}

/// The unfinished leases each live worker holds, when they are not balanced (most minus fewest
/// more than one).
pub fn imbalance(leases: &[Lease], live: &HashSet<String>) -> Option<String> {
    let mut held: BTreeMap<&str, usize> = live.iter().map(|w| (w.as_str(), 0)).collect();
    for l in leases.iter().filter(|l| !l.is_finished()) {
        if let Some(n) = l.owner.as_deref().and_then(|o| held.get_mut(o)) {
            *n += 1;
        }
    }
    let (min, max) = (held.values().min()?, held.values().max()?);
    (max - min > 1).then(|| format!("leases per worker {held:?}"))
}

/// Balance by throughput with one hot shard (the unfinished lease carrying more than
/// `8 × floor_kbps`; every other shard carries less than the floor): the other workers' counts
/// differ by at most one (their shards all weigh the floor), and the hot shard's worker either
/// holds it alone or is at most 4 floors more loaded than any other worker (a cold lease moves
/// when the gap passes 1.75 floors plus a tenth of the throughput above the floor, here 1.5;
/// the rest is slack for the smoothing). Balancing by count leaves the hot worker about the hot
/// shard's throughput above the others, and fails this. `Some` says what is off, including a
/// hot shard not measured (or not held) yet.
pub fn hot_imbalance(leases: &[Lease], live: &HashSet<String>, floor_kbps: f64) -> Option<String> {
    let active: Vec<&Lease> = leases.iter().filter(|l| !l.is_finished()).collect();
    let kbps = |l: &Lease| l.throughput_kbps.unwrap_or(0.0);
    let hot = active
        .iter()
        .filter(|l| kbps(l) > 8.0 * floor_kbps)
        .max_by(|a, b| kbps(a).total_cmp(&kbps(b)));
    let Some(hot) = hot else {
        return Some("no hot shard measured yet".into());
    };
    let Some(hot_owner) = hot.owner.as_deref().filter(|o| live.contains(*o)) else {
        return Some(format!("hot shard {} not held by a live worker", hot.key));
    };
    // Per live worker: leases and load.
    let mut held: BTreeMap<&str, (usize, f64)> =
        live.iter().map(|w| (w.as_str(), (0, 0.0))).collect();
    for l in &active {
        if let Some(h) = l.owner.as_deref().and_then(|o| held.get_mut(o)) {
            h.0 += 1;
            h.1 += kbps(l).max(floor_kbps);
        }
    }
    let (hot_count, hot_load) = held[hot_owner];
    let others: Vec<(usize, f64)> = held
        .iter()
        .filter(|(w, _)| **w != hot_owner)
        .map(|(_, h)| *h)
        .collect();
    let uneven = match (
        others.iter().map(|h| h.0).min(),
        others.iter().map(|h| h.0).max(),
    ) {
        (Some(min), Some(max)) => max - min > 1,
        _ => false,
    };
    let hot_heavy = hot_count > 1 && others.iter().any(|h| hot_load - h.1 > 4.0 * floor_kbps);
    (uneven || hot_heavy).then(|| {
        format!(
            "leases and KiB/s per worker {held:?}, hot shard {} ({:.1} KiB/s) held by {hot_owner}",
            hot.key,
            kbps(hot)
        )
    })
}

/// Takes after `since`: lease moves while nothing changed. A hand-off asked for by `since` and
/// completed after it (its release and the new owner's take) is the end of a move already
/// counted, not a new one: balance is judged by `leaseOwner`, which names the new owner from the
/// request on.
pub fn moves_since(entries: &[(Duration, Entry)], since: Duration) -> Vec<String> {
    let mut in_flight: HashSet<&str> = HashSet::new();
    let mut out = Vec::new();
    for (at, e) in entries {
        match e {
            Entry::AskedFor { shard, .. } if *at <= since => {
                in_flight.insert(shard);
            }
            Entry::Took { shard, .. } if *at <= since => {
                in_flight.remove(shard.as_str());
            }
            Entry::HandedOff { shard, .. } if in_flight.contains(shard.as_str()) => {}
            Entry::Took { shard, .. } if in_flight.remove(shard.as_str()) => {}
            Entry::Took { worker, shard } if *at > since => {
                out.push(format!("{worker} took {shard} at {at:?}"));
            }
            Entry::HandedOff { worker, shard } if *at > since => {
                out.push(format!("{worker} handed {shard} off at {at:?}"));
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64, e: Entry) -> (Duration, Entry) {
        (Duration::from_millis(ms), e)
    }

    #[test]
    fn completing_a_hand_off_asked_for_before_is_not_a_new_move() {
        let (w, s) = (|w: &str| w.to_owned(), |s: &str| s.to_owned());
        let entries = [
            at(
                100,
                Entry::AskedFor {
                    worker: w("b"),
                    shard: s("x"),
                },
            ),
            at(
                300,
                Entry::HandedOff {
                    worker: w("a"),
                    shard: s("x"),
                },
            ),
            at(
                400,
                Entry::Took {
                    worker: w("b"),
                    shard: s("x"),
                },
            ),
            at(
                500,
                Entry::AskedFor {
                    worker: w("a"),
                    shard: s("y"),
                },
            ),
            at(
                600,
                Entry::HandedOff {
                    worker: w("b"),
                    shard: s("y"),
                },
            ),
            at(
                700,
                Entry::Took {
                    worker: w("a"),
                    shard: s("y"),
                },
            ),
        ];
        assert_eq!(
            moves_since(&entries, Duration::from_millis(200)),
            ["b handed y off at 600ms", "a took y at 700ms"]
        );
        assert_eq!(moves_since(&entries, Duration::from_millis(50)).len(), 4);
    }
}
