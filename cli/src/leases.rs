//! `leases`: an application's lease table (this crate's or a Java KCL's), as a table: each
//! lease's owner, counter, checkpoint, parents, children and state, and with `--lag` how far
//! behind its shard's tip the checkpoint is. `--watch` redraws it and tells held leases from
//! expired ones by whether their counter moved within the failover time.

use std::collections::HashMap;
use std::time::Duration;

use clap::Args;
use kcl::leases::{CheckpointPosition, DynamoDbLeaseStore, Lease, LeaseStore};
use kinesis_api::{IteratorStart, Kinesis, SdkKinesis, StreamRef};
use serde_json::json;
use tokio::time::Instant;

use crate::output::Output;
use crate::{CALL_TIMEOUT, Failure};

#[derive(Debug, Args)]
pub(crate) struct LeasesArgs {
    /// The application name (its lease table's name).
    application: String,
    /// Also show how far behind its shard's tip each checkpoint is (two Kinesis calls per
    /// unfinished lease).
    #[arg(long)]
    lag: bool,
    /// The stream of a single-stream table, for --lag (multi-stream leases name theirs).
    #[arg(long)]
    stream: Option<String>,
    /// Redraw every --interval until interrupted; leases whose counter has not moved for
    /// --failover show as expired.
    #[arg(long)]
    watch: bool,
    /// How often --watch reads the table.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// The fleet's failover time (a lease not renewed for this long has expired).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    failover: Duration,
}

/// Remembers when each lease's counter last moved (for `--watch`).
#[derive(Default)]
struct Counters(HashMap<String, (u64, Instant)>);

impl Counters {
    /// The lease's state: finished, unowned, or (owned) held or expired; without history
    /// (one look), just owned.
    fn state(&mut self, lease: &Lease, now: Instant, failover: Option<Duration>) -> &'static str {
        let since = match self.0.get(&lease.key) {
            Some((counter, since)) if *counter == lease.counter => *since,
            _ => now,
        };
        self.0.insert(lease.key.clone(), (lease.counter, since));
        if lease.is_finished() {
            "finished"
        } else if lease.owner.is_none() {
            "unowned"
        } else if lease.is_handing_off() {
            "handing-off"
        } else {
            match failover {
                None => "owned",
                Some(f) if now.saturating_duration_since(since) >= f => "expired",
                Some(_) => "held",
            }
        }
    }
}

pub(crate) async fn run(
    config: &aws_config::SdkConfig,
    args: LeasesArgs,
    out: &Output,
) -> Result<(), Failure> {
    let store = DynamoDbLeaseStore::new(
        aws_sdk_dynamodb::Client::new(config),
        args.application.as_str(),
    )
    .with_call_timeout(CALL_TIMEOUT);
    let kinesis = SdkKinesis::new(&aws_sdk_kinesis::Client::new(config), CALL_TIMEOUT);
    let mut counters = Counters::default();
    let started = Instant::now();
    loop {
        let mut leases = store.list().await?;
        leases.sort_by(|a, b| a.key.cmp(&b.key));
        let now = Instant::now();
        // Expiry needs a failover time of history.
        let failover =
            (args.watch && now.duration_since(started) >= args.failover).then_some(args.failover);
        let mut rows = Vec::with_capacity(leases.len());
        for lease in &leases {
            let state = counters.state(lease, now, failover);
            let behind = match args.lag && !lease.is_finished() {
                true => lag(&kinesis, lease, args.stream.as_deref()).await,
                false => None,
            };
            rows.push((lease, state, behind));
        }
        if args.watch && !out.json {
            // Clear the terminal and draw again from the top.
            print!("\x1b[2J\x1b[H");
        }
        print_table(out, &args.application, &rows);
        if !args.watch {
            return Ok(());
        }
        tokio::time::sleep(args.interval).await;
    }
}

/// Milliseconds between the lease's checkpoint and its shard's tip, where Kinesis says.
async fn lag(kinesis: &SdkKinesis, lease: &Lease, stream: Option<&str>) -> Option<i64> {
    let name = lease.stream_name().or(stream)?;
    let start = match &lease.checkpoint {
        CheckpointPosition::Sequence { sequence, .. } => {
            IteratorStart::AfterSequence(sequence.to_string())
        }
        CheckpointPosition::TrimHorizon => IteratorStart::TrimHorizon,
        CheckpointPosition::Latest => return Some(0),
        _ => return None,
    };
    let stream = StreamRef::new(name);
    let iterator = kinesis
        .get_shard_iterator(&stream, lease.shard(), &start)
        .await
        .ok()?;
    kinesis
        .get_records(&iterator, 1)
        .await
        .ok()?
        .millis_behind_latest
}

fn print_table(out: &Output, application: &str, rows: &[(&Lease, &str, Option<i64>)]) {
    if out.json {
        let leases: Vec<serde_json::Value> = rows
            .iter()
            .map(|(l, state, behind)| {
                let (checkpoint, sub) = l.checkpoint.as_stored();
                json!({
                    "lease_key": l.key,
                    "stream": l.stream_identifier,
                    "shard": l.shard(),
                    "owner": l.owner,
                    "checkpoint_owner": l.checkpoint_owner,
                    "counter": l.counter,
                    "checkpoint": checkpoint,
                    "checkpoint_sub_sequence_number": sub,
                    "parents": l.parent_shard_ids,
                    "children": l.child_shard_ids,
                    "state": state,
                    "throughput_kbps": l.throughput_kbps,
                    "millis_behind_latest": behind,
                })
            })
            .collect();
        return out.emit(
            String::new,
            || json!({"application": application, "leases": leases}),
        );
    }
    let header = [
        "LEASE",
        "OWNER",
        "COUNTER",
        "CHECKPOINT",
        "PARENTS",
        "CHILDREN",
        "STATE",
        "BEHIND",
    ];
    let table: Vec<[String; 8]> = rows
        .iter()
        .map(|(l, state, behind)| {
            let owner = match (&l.checkpoint_owner, &l.owner) {
                (Some(from), Some(to)) => format!("{from}->{to}"),
                (_, owner) => owner.clone().unwrap_or_else(|| "-".into()),
            };
            let list = |ids: &[String]| match ids.is_empty() {
                true => "-".to_owned(),
                false => ids.join(","),
            };
            [
                l.key.clone(),
                owner,
                l.counter.to_string(),
                l.checkpoint.to_string(),
                list(&l.parent_shard_ids),
                list(&l.child_shard_ids),
                (*state).to_owned(),
                behind.map_or("-".into(), |ms| format!("{ms} ms")),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &table {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    let mut text = vec![line(&header.map(str::to_owned))];
    text.extend(table.iter().map(|row| line(row)));
    text.push(format!("{} leases in {application}", rows.len()));
    out.emit(|| text.join("\n"), || json!(null));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_lease_whose_counter_stands_still_for_the_failover_time_is_expired() {
        let mut counters = Counters::default();
        let mut lease = Lease::new("s", CheckpointPosition::TrimHorizon);
        lease.owner = Some("w".into());
        let t0 = Instant::now();
        let f = Some(Duration::from_secs(10));
        assert_eq!(counters.state(&lease, t0, None), "owned");
        assert_eq!(
            counters.state(&lease, t0 + Duration::from_secs(9), f),
            "held"
        );
        assert_eq!(
            counters.state(&lease, t0 + Duration::from_secs(10), f),
            "expired"
        );
        lease.counter += 1;
        assert_eq!(
            counters.state(&lease, t0 + Duration::from_secs(11), f),
            "held"
        );
        lease.owner = None;
        assert_eq!(
            counters.state(&lease, t0 + Duration::from_secs(30), f),
            "unowned"
        );
    }
}
