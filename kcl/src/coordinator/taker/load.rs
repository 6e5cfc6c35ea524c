//! Throughput-aware balancing: workers move toward equal load (the sum of their leases'
//! `throughputKBps`), not equal lease counts, without churn.
//!
//! - A lease weighs its throughput, but never less than the floor (`floor_kbps`): shards below
//!   it (idle, or nearly) all weigh the same, so they are balanced by count, and their small
//!   ups and downs never move them.
//! - Expired leases are taken while this worker's load is below the fleet's average (the
//!   expired leases included, so some worker is always below it: every lease is taken).
//! - Otherwise a lease is stolen from the most loaded worker that has one worth moving: lease
//!   `l` moves from `V` to this worker `W` only if `load(V) − load(W) > 1.25 × weight(l) +
//!   floor / 2 + 0.1 × (throughput of V and W above the floor)`. After such a move the reverse
//!   move needs the gap to have grown by half the lease's weight again, so a measurement that
//!   wobbles by less than that moves nothing back; the last term keeps a hot lease's measure,
//!   drifting by a few percent, from carrying a gap across the line; and each move lowers the
//!   sum of squared loads: the fleet settles. Among the leases worth moving, the one closest to
//!   half the gap is chosen (the move that evens the two most).
//! - No extra table: the loads are read from the lease table the taker lists anyway.

use rand::seq::SliceRandom;

use super::{LeaseTaker, Plan};
use crate::leases::Lease;

/// How workers share the leases.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Balance {
    /// Equal lease counts (the Java KCL 2.x rule).
    Count,
    /// Equal throughput, each lease weighing at least `floor_kbps`.
    Throughput { floor_kbps: f64 },
}

/// The hysteresis: a move needs a gap this many times the lease's weight (plus half the floor).
const HYSTERESIS: f64 = 1.25;
/// And, for the measurements' noise, this share of both workers' throughput above the floor: a
/// hot lease's measure that drifts by a few percent must not carry the gap across the line.
const NOISE: f64 = 0.1;

impl LeaseTaker {
    /// The plan of a round when balancing by throughput.
    pub(super) fn plan_by_load(
        &mut self,
        active: &[&Lease],
        expired: Vec<&Lease>,
        live: Vec<&Lease>,
        floor_kbps: f64,
    ) -> Plan {
        let me = self.config.worker_id.as_str();
        let weight = |l: &Lease| l.throughput_kbps.unwrap_or(0.0).max(floor_kbps);
        // Per owner: its load, its throughput above the floor, its leases.
        let mut per_owner: std::collections::BTreeMap<&str, (f64, f64, Vec<&Lease>)> =
            Default::default();
        for lease in &live {
            if let Some(owner) = lease.owner.as_deref() {
                let entry = per_owner.entry(owner).or_default();
                entry.0 += weight(lease);
                entry.1 += weight(lease) - floor_kbps;
                entry.2.push(lease);
            }
        }
        let (mut my_load, mut my_excess, my_count) = per_owner
            .get(me)
            .map_or((0.0, 0.0, 0), |(load, excess, leases)| {
                (*load, *excess, leases.len())
            });
        let workers = per_owner.len() + usize::from(!per_owner.contains_key(me));
        let total: f64 = active.iter().map(|l| weight(l)).sum();
        let average = total / workers.max(1) as f64;
        let room = self.config.max_leases_per_worker.saturating_sub(my_count);
        if room == 0 {
            return Plan::default();
        }

        if !expired.is_empty() {
            let mut expired: Vec<&Lease> = expired;
            expired.shuffle(&mut self.rng);
            let mut take = Vec::new();
            for lease in expired {
                if my_load >= average || take.len() == room {
                    break;
                }
                my_load += weight(lease);
                take.push(lease.clone());
            }
            take.sort_by(|a, b| a.key.cmp(&b.key));
            return Plan {
                take,
                steal: Vec::new(),
            };
        }

        // The others, most loaded first.
        let mut others: Vec<(&str, f64, f64, Vec<&Lease>)> = per_owner
            .into_iter()
            .filter(|(owner, _)| *owner != me)
            .map(|(owner, (load, excess, leases))| (owner, load, excess, leases))
            .collect();
        others.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
        let mut steal = Vec::new();
        while steal.len() < self.config.max_leases_to_steal.min(room) {
            let Some((victim, lease)) =
                others.iter_mut().find_map(|(owner, load, excess, leases)| {
                    let gap = *load - my_load;
                    if gap <= 0.0 {
                        return None;
                    }
                    let noise = NOISE * (*excess + my_excess);
                    leases.shuffle(&mut self.rng);
                    let best = leases
                        .iter()
                        .enumerate()
                        .filter(|(_, l)| {
                            !l.is_handing_off()
                                && gap > HYSTERESIS * weight(l) + floor_kbps / 2.0 + noise
                        })
                        .min_by(|(_, a), (_, b)| {
                            (weight(a) - gap / 2.0)
                                .abs()
                                .total_cmp(&(weight(b) - gap / 2.0).abs())
                        })
                        .map(|(i, _)| i)?;
                    let lease = leases.swap_remove(best);
                    *load -= weight(lease);
                    *excess -= weight(lease) - floor_kbps;
                    Some((*owner, lease))
                })
            else {
                break;
            };
            tracing::debug!(worker = %me, from = victim, lease = %lease.key, kbps = weight(lease), "stealing toward equal throughput");
            my_load += weight(lease);
            my_excess += weight(lease) - floor_kbps;
            steal.push(lease.clone());
            others.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
        }
        Plan {
            take: Vec::new(),
            steal,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use tokio::time::Instant;

    use super::super::{LeaseTaker, TakerConfig};
    use super::*;
    use crate::leases::CheckpointPosition;

    const FLOOR: f64 = 50.0;

    fn config(me: &str) -> TakerConfig {
        TakerConfig {
            balance: Balance::Throughput { floor_kbps: FLOOR },
            ..TakerConfig::test(me)
        }
    }

    /// Shard `i` of 12: shard 0 hot (1,000 KiB/s), the others cold (10 KiB/s, below the floor).
    fn lease(i: usize, owner: Option<&str>) -> Lease {
        let mut l = Lease::new(format!("s{i:02}"), CheckpointPosition::TrimHorizon);
        l.owner = owner.map(str::to_owned);
        l.throughput_kbps = Some(if i == 0 { 1_000.0 } else { 10.0 });
        l
    }

    /// Runs take rounds of `workers` in turn, applying every take and steal at once, until a
    /// full pass moves nothing; returns the owners and how many passes moved something.
    fn settle(owners: &mut [Option<String>], workers: &[&str], passes: usize) -> usize {
        let now = Instant::now();
        let mut takers: Vec<LeaseTaker> =
            workers.iter().map(|w| LeaseTaker::new(config(w))).collect();
        for moving in 0..passes {
            let mut moved = false;
            for (w, taker) in workers.iter().zip(&mut takers) {
                let table: Vec<Lease> = owners
                    .iter()
                    .enumerate()
                    .map(|(i, o)| lease(i, o.as_deref()))
                    .collect();
                let held: HashSet<String> = table
                    .iter()
                    .filter(|l| l.owner.as_deref() == Some(*w))
                    .map(|l| l.key.clone())
                    .collect();
                let plan = taker.plan(&table, &held, now);
                for l in plan.take.iter().chain(&plan.steal) {
                    let i: usize = l.key[1..].parse().unwrap();
                    owners[i] = Some((*w).to_owned());
                    moved = true;
                }
            }
            if !moved {
                return moving;
            }
        }
        panic!("still moving after {passes} passes: {owners:?}");
    }

    fn counts(owners: &[Option<String>], workers: &[&str]) -> Vec<usize> {
        workers
            .iter()
            .map(|w| owners.iter().filter(|o| o.as_deref() == Some(*w)).count())
            .collect()
    }

    #[test]
    fn a_hot_shards_worker_holds_fewer_leases_and_the_fleet_then_stands_still() {
        let mut owners: Vec<Option<String>> = vec![None; 12];
        settle(&mut owners, &["a", "b", "c"], 50);
        let hot_owner = owners[0].clone().unwrap();
        let workers = ["a", "b", "c"];
        let by_worker = counts(&owners, &workers);
        let hot = workers.iter().position(|w| *w == hot_owner).unwrap();
        let hot_count = by_worker[hot];
        assert!(
            (0..3)
                .filter(|&i| i != hot)
                .all(|i| by_worker[i] > hot_count),
            "the hot shard's worker holds the fewest: {by_worker:?}"
        );
        assert_eq!(hot_count, 1, "the hot shard alone outweighs the rest");
        // Settled: 20 more rounds of every worker move nothing.
        let before = owners.clone();
        assert_eq!(settle(&mut owners, &workers, 20), 0);
        assert_eq!(owners, before);
    }

    #[test]
    fn a_joining_worker_takes_its_share_within_three_rounds() {
        let mut owners: Vec<Option<String>> = vec![None; 12];
        settle(&mut owners, &["a", "b", "c"], 50);
        let moving = settle(&mut owners, &["a", "b", "c", "d"], 50);
        assert!(moving <= 3, "{moving} rounds");
        let d = counts(&owners, &["d"])[0];
        assert!(d >= 3, "d holds {d}: {owners:?}");
    }

    #[test]
    fn idle_shards_are_balanced_by_count_and_wobbles_below_the_floor_move_nothing() {
        let now = Instant::now();
        let mut taker = LeaseTaker::new(config("c"));
        // a: 5 idle leases, b: 4, c: 3; throughputs wobbling under the floor.
        let table: Vec<Lease> = (0..12)
            .map(|i| {
                let owner = match i {
                    0..=4 => "a",
                    5..=8 => "b",
                    _ => "c",
                };
                let mut l = lease(i + 1, Some(owner));
                l.throughput_kbps = Some((i * 7 % 40) as f64);
                l
            })
            .collect();
        let held: HashSet<String> = table[9..].iter().map(|l| l.key.clone()).collect();
        let plan = taker.plan(&table, &held, now);
        assert_eq!(plan.steal.len(), 1, "5/4/3 by count: one moves");
        assert_eq!(plan.steal[0].owner.as_deref(), Some("a"));
        // 4/4/4 (one already taken): nothing moves, whatever the wobble.
        let mut even = table.clone();
        even[0].owner = Some("c".into());
        let held: HashSet<String> = even
            .iter()
            .filter(|l| l.owner.as_deref() == Some("c"))
            .map(|l| l.key.clone())
            .collect();
        for wobble in 0..10 {
            for (i, l) in even.iter_mut().enumerate() {
                l.throughput_kbps = Some(((i + wobble) * 13 % 50) as f64);
            }
            assert_eq!(taker.plan(&even, &held, now), Plan::default());
        }
    }
}
