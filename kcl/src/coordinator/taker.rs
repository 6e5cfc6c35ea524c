//! Which leases this worker should take: the lease-taking rules of the Java KCL as a pure function
//! of the lease table and this worker's own observations, so they are tested without sleeping.
//!
//! - A lease is expired when it has no owner, or when its counter has not changed for the failover
//!   time *on this worker's clock* (clocks of different hosts are never compared).
//! - The target is ceil(active leases / workers), capped by `max_leases_per_worker`. Below it, a
//!   worker takes expired leases first; when none are expired it steals up to
//!   `max_leases_to_steal` from the most-loaded worker, if that worker is above the target (or at
//!   it while this worker needs more than one).
//! - Leases of finished shards (checkpoint SHARD_END) are neither counted nor taken.
//! - Only the leases this process holds count as its own. A lease whose owner is this worker's
//!   id but that this process does not hold (left by an earlier process with the same id, killed
//!   and restarted; or dropped after renewals failed) is treated like any other worker's: it
//!   expires when its counter stands still for the failover time, and is then taken. A counter
//!   that moves under this id while this process does not hold the lease means another live
//!   process uses the same worker id: that is logged.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use tokio::time::Instant;

use crate::leases::Lease;

mod load;
pub(crate) use load::Balance;

/// The taker's settings.
#[derive(Clone, Debug)]
pub(crate) struct TakerConfig {
    pub(crate) worker_id: String,
    pub(crate) failover_time: Duration,
    pub(crate) max_leases_per_worker: usize,
    pub(crate) max_leases_to_steal: usize,
    /// Seeds the choice among equally good leases (from the worker's jitter, so a simulated
    /// fleet replays exactly).
    pub(crate) seed: u64,
    /// Whether steals are graceful hand-offs (else immediate takes, as KCL 2.x).
    pub(crate) graceful_steals: bool,
    /// How long a hand-off away from this worker may wait for its processor.
    pub(crate) handoff_timeout: Duration,
    /// Toward equal lease counts, or equal throughput.
    pub(crate) balance: Balance,
}

#[cfg(test)]
impl TakerConfig {
    /// Worker `worker_id`, failover 10 s, no lease limit, one steal a round, immediate steals,
    /// count balancing.
    pub(crate) fn test(worker_id: &str) -> TakerConfig {
        TakerConfig {
            worker_id: worker_id.into(),
            failover_time: Duration::from_secs(10),
            max_leases_per_worker: usize::MAX,
            max_leases_to_steal: 1,
            seed: 0,
            graceful_steals: false,
            handoff_timeout: Duration::from_secs(30),
            balance: Balance::Count,
        }
    }
}

#[derive(Clone, Debug)]
struct Observed {
    counter: u64,
    owner: Option<String>,
    /// When this worker last saw the counter change (None: never owned, expired at once).
    changed_at: Option<Instant>,
    /// This process held the lease when it looked (its own renewals moved the counter since).
    held: bool,
}

/// What to do this round.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Plan {
    /// Expired or unowned leases to take.
    pub(crate) take: Vec<Lease>,
    /// Leases to steal from a busier worker.
    pub(crate) steal: Vec<Lease>,
}

/// Remembers when each lease's counter last moved, and plans takes and steals.
#[derive(Debug)]
pub(crate) struct LeaseTaker {
    config: TakerConfig,
    observed: HashMap<String, Observed>,
    /// Leases already reported as renewed by another process with this worker's id.
    duplicate_id_warned: HashSet<String>,
    /// Picks among equally good leases, so workers planning at once do not all reach for the
    /// same ones.
    rng: StdRng,
}

impl LeaseTaker {
    pub(crate) fn new(config: TakerConfig) -> Self {
        LeaseTaker {
            rng: StdRng::seed_from_u64(config.seed),
            config,
            observed: HashMap::new(),
            duplicate_id_warned: HashSet::new(),
        }
    }

    /// Records a fresh listing of the table (at `now`) and returns what to take; `held` are the
    /// keys of the leases this process holds.
    pub(crate) fn plan(&mut self, leases: &[Lease], held: &HashSet<String>, now: Instant) -> Plan {
        self.observe(leases, held, now);
        let me = self.config.worker_id.as_str();
        let is_held = |l: &Lease| held.contains(&l.key) && l.owner.as_deref() == Some(me);
        let active: Vec<&Lease> = leases.iter().filter(|l| !l.is_finished()).collect();
        let (expired, live): (Vec<&Lease>, Vec<&Lease>) = active
            .iter()
            .partition(|l| !is_held(l) && self.is_expired(l, now));
        if let Balance::Throughput { floor_kbps } = self.config.balance {
            return self.plan_by_load(&active, expired, live, floor_kbps);
        }

        // An earlier process's lease under this id that has not expired yet counts toward this
        // worker's share (it becomes takeable once expired), so nothing is stolen meanwhile; it
        // is never stolen from "itself".
        let mut per_owner: BTreeMap<&str, Vec<&Lease>> = BTreeMap::new();
        for lease in &live {
            if let Some(owner) = lease.owner.as_deref() {
                per_owner.entry(owner).or_default().push(lease);
            }
        }
        let mine = per_owner.get(me).map_or(0, Vec::len);
        let workers = per_owner.len() + usize::from(!per_owner.contains_key(me));
        let target = active
            .len()
            .div_ceil(workers.max(1))
            .min(self.config.max_leases_per_worker);
        if mine >= target {
            return Plan::default();
        }
        let needed = target - mine;

        if !expired.is_empty() {
            // A random choice: workers planning at once (a cold start, a crash) then mostly
            // reach for different leases instead of all racing for the same first ones. Taken
            // in key order (parents, with lower shard ids, ahead of their children).
            let mut take: Vec<Lease> = expired.into_iter().cloned().collect();
            take.shuffle(&mut self.rng);
            take.truncate(needed);
            take.sort_by(|a, b| a.key.cmp(&b.key));
            return Plan {
                take,
                steal: Vec::new(),
            };
        }

        let busiest = per_owner
            .iter()
            .filter(|(owner, _)| **owner != me)
            .max_by_key(|(owner, held)| (held.len(), std::cmp::Reverse(**owner)));
        let Some((_, held)) = busiest else {
            return Plan::default();
        };
        let worth_it = held.len() > target || (held.len() == target && needed > 1);
        if !worth_it {
            return Plan::default();
        }
        let count = needed
            .min(self.config.max_leases_to_steal)
            .min(held.len().saturating_sub(target).max(1));
        // A random one of its leases: idle workers stealing at once mostly pick different ones.
        // One already being handed off is on its way elsewhere.
        let mut steal: Vec<Lease> = held
            .iter()
            .filter(|l| !l.is_handing_off())
            .map(|l| (*l).clone())
            .collect();
        steal.sort_by(|a, b| a.key.cmp(&b.key));
        steal.shuffle(&mut self.rng);
        steal.truncate(count);
        Plan {
            take: Vec::new(),
            steal,
        }
    }

    fn observe(&mut self, leases: &[Lease], held: &HashSet<String>, now: Instant) {
        let me = self.config.worker_id.as_str();
        let mut next = HashMap::with_capacity(leases.len());
        for lease in leases {
            // (A lease handed off to this worker is renewed by its old owner until released.)
            let renewed_by_my_id_elsewhere = lease.owner.as_deref() == Some(me)
                && !lease.is_handing_off()
                && !held.contains(&lease.key)
                && self.observed.get(&lease.key).is_some_and(|o| {
                    !o.held && o.owner == lease.owner && o.counter != lease.counter
                });
            if renewed_by_my_id_elsewhere && self.duplicate_id_warned.insert(lease.key.clone()) {
                tracing::error!(worker = %me, lease = %lease.key, "another live process renews leases under this worker id: give every process its own worker id (two processes sharing one take each other's leases)");
            }
            let changed_at = match self.observed.get(&lease.key) {
                Some(o) if o.counter == lease.counter && o.owner == lease.owner => o.changed_at,
                // First sight of an owned lease: give its owner the full failover time.
                Some(_) | None if lease.owner.is_some() => Some(now),
                _ => None,
            };
            next.insert(
                lease.key.clone(),
                Observed {
                    counter: lease.counter,
                    owner: lease.owner.clone(),
                    changed_at,
                    held: held.contains(&lease.key),
                },
            );
        }
        self.observed = next;
    }

    /// When this worker last saw the lease's counter (or owner) change.
    pub(crate) fn last_change(&self, key: &str) -> Option<Instant> {
        self.observed.get(key).and_then(|o| o.changed_at)
    }

    fn is_expired(&self, lease: &Lease, now: Instant) -> bool {
        if lease.owner.is_none() {
            return true;
        }
        match self.observed.get(&lease.key).and_then(|o| o.changed_at) {
            Some(at) => now.saturating_duration_since(at) > self.config.failover_time,
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leases::CheckpointPosition;

    fn config(me: &str) -> TakerConfig {
        TakerConfig::test(me)
    }

    fn lease(key: &str, owner: Option<&str>, counter: u64) -> Lease {
        let mut l = Lease::new(key, CheckpointPosition::TrimHorizon);
        l.owner = owner.map(str::to_owned);
        l.counter = counter;
        l
    }

    /// The keys `me` owns in `table`, as held by a process that has run all along.
    fn owned(table: &[Lease], me: &str) -> HashSet<String> {
        table
            .iter()
            .filter(|l| l.owner.as_deref() == Some(me))
            .map(|l| l.key.clone())
            .collect()
    }

    fn keys(leases: &[Lease]) -> Vec<&str> {
        leases.iter().map(|l| l.key.as_str()).collect()
    }

    #[test]
    fn unowned_leases_are_taken_at_once_up_to_the_fair_share() {
        let now = Instant::now();
        let mut taker = LeaseTaker::new(config("a"));
        let table: Vec<Lease> = (0..4).map(|i| lease(&format!("s{i}"), None, 0)).collect();
        // Alone: all four.
        assert_eq!(
            keys(&taker.plan(&table, &owned(&table, "a"), now).take),
            ["s0", "s1", "s2", "s3"]
        );

        // With another worker holding one live lease: the share is ceil(4/2) = 2.
        let mut table = table;
        table[3] = lease("s3", Some("b"), 5);
        let plan = LeaseTaker::new(config("a")).plan(&table, &owned(&table, "a"), now);
        assert_eq!(keys(&plan.take), ["s0", "s1"]);
    }

    #[test]
    fn an_owned_lease_expires_only_after_its_counter_stood_still_for_the_failover_time() {
        let start = Instant::now();
        let mut taker = LeaseTaker::new(config("a"));
        let table = vec![lease("s0", Some("b"), 7)];
        assert_eq!(
            taker.plan(&table, &owned(&table, "a"), start),
            Plan::default(),
            "first sight: not expired"
        );
        assert_eq!(
            taker.plan(&table, &owned(&table, "a"), start + Duration::from_secs(10)),
            Plan::default(),
            "exactly the failover time: not yet"
        );
        // The owner renews: the clock restarts.
        let renewed = vec![lease("s0", Some("b"), 8)];
        assert_eq!(
            taker.plan(
                &renewed,
                &owned(&renewed, "a"),
                start + Duration::from_secs(9)
            ),
            Plan::default()
        );
        assert_eq!(
            taker.plan(
                &renewed,
                &owned(&renewed, "a"),
                start + Duration::from_secs(19)
            ),
            Plan::default()
        );
        let plan = taker.plan(
            &renewed,
            &owned(&renewed, "a"),
            start + Duration::from_secs(20),
        );
        assert_eq!(
            keys(&plan.take),
            ["s0"],
            "counter unchanged for more than 10 s"
        );
    }

    #[test]
    fn three_workers_on_eight_shards_settle_at_3_3_2() {
        let now = Instant::now();
        let mut owners: Vec<Option<String>> = vec![None; 8];
        let mut takers: Vec<LeaseTaker> = ["w0", "w1", "w2"]
            .iter()
            .map(|w| LeaseTaker::new(config(w)))
            .collect();
        // Each worker in turn plans against the table as the others left it, and applies its plan.
        for round in 0..10 {
            for (i, taker) in takers.iter_mut().enumerate() {
                let me = format!("w{i}");
                let table: Vec<Lease> = owners
                    .iter()
                    .enumerate()
                    .map(|(s, o)| lease(&format!("s{s}"), o.as_deref(), round))
                    .collect();
                let plan = taker.plan(&table, &owned(&table, &me), now);
                for l in plan.take.iter().chain(&plan.steal) {
                    let s: usize = l.key[1..].parse().unwrap();
                    owners[s] = Some(me.clone());
                }
            }
        }
        let mut counts: Vec<usize> = (0..3)
            .map(|i| {
                owners
                    .iter()
                    .filter(|o| o.as_deref() == Some(format!("w{i}").as_str()))
                    .count()
            })
            .collect();
        counts.sort();
        assert_eq!(counts, [2, 3, 3]);
    }

    #[test]
    fn steals_one_lease_from_the_busiest_worker_when_nothing_is_expired() {
        let now = Instant::now();
        let mut table: Vec<Lease> = (0..6)
            .map(|i| lease(&format!("s{i}"), Some("b"), 1))
            .collect();
        table.push(lease("s6", Some("c"), 1));
        let plan = LeaseTaker::new(config("a")).plan(&table, &owned(&table, "a"), now);
        assert!(plan.take.is_empty());
        assert_eq!(plan.steal.len(), 1, "max_leases_to_steal is 1");
        assert_eq!(plan.steal[0].owner.as_deref(), Some("b"));
    }

    #[test]
    fn a_balanced_fleet_steals_nothing_and_finished_shards_do_not_count() {
        let now = Instant::now();
        let mut table = vec![
            lease("s0", Some("a"), 1),
            lease("s1", Some("a"), 1),
            lease("s2", Some("b"), 1),
            lease("s3", Some("b"), 1),
        ];
        assert_eq!(
            LeaseTaker::new(config("a")).plan(&table, &owned(&table, "a"), now),
            Plan::default()
        );
        let mut done = lease("s9", None, 1);
        done.checkpoint = CheckpointPosition::ShardEnd;
        table.push(done);
        assert_eq!(
            LeaseTaker::new(config("a")).plan(&table, &owned(&table, "a"), now),
            Plan::default(),
            "a finished lease is never taken"
        );
    }

    #[test]
    fn a_restarted_worker_takes_back_its_ids_expired_leases() {
        // A worker "a" was killed holding s0..s3; "b" holds s4..s7. The restarted "a" holds
        // nothing, yet the table still names it as the owner of four leases.
        let start = Instant::now();
        let table: Vec<Lease> = (0..8)
            .map(|i| lease(&format!("s{i}"), Some(if i < 4 { "a" } else { "b" }), 3))
            .collect();
        let none = HashSet::new();
        let mut taker = LeaseTaker::new(config("a"));
        assert_eq!(
            taker.plan(&table, &none, start),
            Plan::default(),
            "not expired yet: the old process may still be alive"
        );
        // b keeps renewing; the old a's counters stand still past the failover time.
        let later: Vec<Lease> = table
            .iter()
            .map(|l| {
                let mut l = l.clone();
                if l.owner.as_deref() == Some("b") {
                    l.counter += 5;
                }
                l
            })
            .collect();
        let plan = taker.plan(&later, &none, start + Duration::from_secs(11));
        assert_eq!(keys(&plan.take), ["s0", "s1", "s2", "s3"]);

        // The other workers see the dead id's leases as expired too: whoever comes first takes them.
        let mut b = LeaseTaker::new(config("b"));
        let b_held = owned(&table, "b");
        b.plan(&table, &b_held, start);
        let plan = b.plan(&later, &b_held, start + Duration::from_secs(11));
        assert_eq!(keys(&plan.take), ["s0", "s1", "s2", "s3"]);
    }

    #[test]
    fn only_a_counter_moving_while_this_process_does_not_hold_the_lease_means_a_second_process() {
        let start = Instant::now();
        let mut taker = LeaseTaker::new(config("a"));
        let held: HashSet<String> = ["s0".to_owned()].into();
        taker.plan(&[lease("s0", Some("a"), 3)], &held, start);
        // Renewed by this process, then given up (renewals failed for the failover time): the
        // counter moved, but by our own hand.
        let none = HashSet::new();
        taker.plan(
            &[lease("s0", Some("a"), 5)],
            &none,
            start + Duration::from_secs(1),
        );
        assert!(taker.duplicate_id_warned.is_empty(), "no false alarm");
        // Moving now, while nobody here holds it: another process uses this id.
        taker.plan(
            &[lease("s0", Some("a"), 6)],
            &none,
            start + Duration::from_secs(2),
        );
        assert!(taker.duplicate_id_warned.contains("s0"));
    }

    #[test]
    fn max_leases_per_worker_caps_the_share() {
        let now = Instant::now();
        let table: Vec<Lease> = (0..10).map(|i| lease(&format!("s{i}"), None, 0)).collect();
        let mut c = config("a");
        c.max_leases_per_worker = 3;
        assert_eq!(
            LeaseTaker::new(c)
                .plan(&table, &owned(&table, "a"), now)
                .take
                .len(),
            3
        );
    }
}
