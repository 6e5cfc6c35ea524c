//! The fleet simulation (see `integration_tests::simulation`): a few hundred seeded runs of small
//! fleets, each checked against the fleet's invariants.
//!
//! `SIM_SEED=N` runs one seed; `SIM_SEEDS=N` runs seeds 0..N (default 300). A failing seed is
//! printed with its events and replays exactly; `SIM_LOG=kcl=debug` (a tracing filter) prints
//! what the workers log while it does.

use std::time::Duration;

use integration_tests::simulation::invariants::{
    checkpoint_regressions, exclusivity, imbalance, moves_since,
};
use integration_tests::simulation::journal::Entry;
use integration_tests::simulation::scenario::{LIVENESS_BOUND, run};
use kcl::leases::{CheckpointPosition, Lease};
use kinesis_format::SequenceNumber;

/// Log lines stamped with the paused clock's time since the test began.
struct SimTime(tokio::time::Instant);

impl tracing_subscriber::fmt::time::FormatTime for SimTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        write!(w, "{:>10.3?}", self.0.elapsed())
    }
}

#[tokio::test(start_paused = true)]
async fn seeded_fleets_keep_the_consumers_promise() {
    if let Ok(filter) = std::env::var("SIM_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_ansi(false)
            .with_timer(SimTime(tokio::time::Instant::now()))
            .with_test_writer()
            .init();
    }
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let seeds: Vec<u64> = match (env("SIM_SEED"), env("SIM_SEEDS")) {
        (Some(seed), _) => vec![seed],
        (None, n) => (0..n.unwrap_or(300)).collect(),
    };
    let mut failures = Vec::new();
    let (mut settled, mut balanced, mut overlap, mut duplicates) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO, 0);
    for &seed in &seeds {
        match run(seed).await {
            Ok(s) => {
                eprintln!("{}", s.line);
                settled = settled.max(s.settled_after);
                balanced = balanced.max(s.balanced_after);
                overlap = overlap.max(s.longest_overlap);
                duplicates += s.duplicates;
            }
            Err(failure) => {
                eprintln!("FAILED {failure}\nreplay: SIM_SEED={seed}");
                failures.push(seed);
            }
        }
    }
    eprintln!(
        "{} seeds: slowest to process every open shard after the last fault {settled:?} (bound {LIVENESS_BOUND:?}), slowest to balance {balanced:?}, longest overlap after a take {overlap:?}, duplicates {duplicates}",
        seeds.len()
    );
    assert!(failures.is_empty(), "failing seeds: {failures:?}");
}

fn entry_batch(worker: &str, session: &str) -> Entry {
    Entry::BatchStart {
        worker: worker.into(),
        session: session.into(),
        shard: "s0".into(),
    }
}

#[test]
fn a_batch_started_after_a_refused_renewal_is_caught() {
    let at = Duration::from_secs;
    let init = |w: &str, s: &str| Entry::Initialized {
        worker: w.into(),
        session: s.into(),
        shard: "s0".into(),
    };
    let took = |w: &str| Entry::Took {
        worker: w.into(),
        shard: "s0".into(),
    };
    let refused = Entry::RenewRefused {
        worker: "a".into(),
        shard: "s0".into(),
    };
    let fine = vec![
        (at(0), init("a", "a/0")),
        (at(1), entry_batch("a", "a/0")),
        (at(2), took("b")),
        (at(3), entry_batch("a", "a/0")),
        (at(4), refused.clone()),
        (at(5), init("b", "b/1")),
        (at(6), entry_batch("b", "b/1")),
        // a takes the shard back later: a new session may start batches.
        (at(7), took("a")),
        (at(8), init("a", "a/2")),
        (at(9), entry_batch("a", "a/2")),
    ];
    let e = exclusivity(&fine);
    assert!(e.violations.is_empty(), "{:?}", e.violations);
    assert_eq!(e.longest_overlap, at(1), "a's batch 1 s after b's take");
    let mut broken = fine.clone();
    broken.insert(5, (at(4), entry_batch("a", "a/0")));
    assert_eq!(exclusivity(&broken).violations.len(), 1);
}

#[test]
fn imbalance_and_moves_are_caught() {
    let lease = |key: &str, owner: &str| {
        let mut l = Lease::new(key, CheckpointPosition::TrimHorizon);
        l.owner = Some(owner.into());
        l
    };
    let live = ["a".to_owned(), "b".to_owned()].into_iter().collect();
    let even = [lease("s0", "a"), lease("s1", "b"), lease("s2", "a")];
    assert_eq!(imbalance(&even, &live), None);
    let uneven = [lease("s0", "a"), lease("s1", "a"), lease("s2", "a")];
    assert!(imbalance(&uneven, &live).is_some());
    let entries = [(
        Duration::from_secs(5),
        Entry::Took {
            worker: "a".into(),
            shard: "s0".into(),
        },
    )];
    assert!(moves_since(&entries, Duration::from_secs(5)).is_empty());
    assert_eq!(moves_since(&entries, Duration::from_secs(4)).len(), 1);
}

#[test]
fn a_checkpoint_moving_backwards_is_caught() {
    let at = |s: &str| CheckpointPosition::Sequence {
        sequence: SequenceNumber::parse(s).unwrap(),
        sub_sequence: 0,
    };
    let forward = [
        ("a".to_owned(), at("5")),
        ("b".to_owned(), at("1")),
        ("a".to_owned(), at("7")),
        ("a".to_owned(), CheckpointPosition::ShardEnd),
    ];
    assert!(checkpoint_regressions(&forward).is_empty());
    let back = [("a".to_owned(), at("7")), ("a".to_owned(), at("5"))];
    assert_eq!(checkpoint_regressions(&back).len(), 1);
    let after_end = [
        ("a".to_owned(), CheckpointPosition::ShardEnd),
        ("a".to_owned(), at("9")),
    ];
    assert_eq!(checkpoint_regressions(&after_end).len(), 1);
}
