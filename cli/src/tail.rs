//! `tail`: a stream's user records, deaggregated, from any position; one shard or all of them,
//! parents before their children (a child is read once all its parents are read to their end).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, SystemTime};

use clap::{Args, ValueEnum};
use kinesis_api::{IteratorStart, Kinesis, SdkKinesis, Shard, ShardFilter, StreamRef};
use kinesis_format::{Deaggregated, deaggregate};
use kinesis_retry::{AwsError, BackoffConfig, RetryPolicy, retry};
use serde_json::json;

use crate::output::{Output, data_field};
use crate::{CALL_TIMEOUT, Failure};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum From {
    /// The oldest records retained.
    TrimHorizon,
    /// Only records put from now on.
    Latest,
}

#[derive(Debug, Args)]
pub(crate) struct TailArgs {
    /// The stream (name or ARN).
    stream: String,
    /// Where to start (when no timestamp or sequence number is given).
    #[arg(long, value_enum, default_value = "trim-horizon")]
    from: From,
    /// Start at the first record at or after this time (RFC 3339, e.g. 2026-12-02T10:00:00Z).
    #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
    at_timestamp: Option<SystemTime>,
    /// Start at this record (with --shard).
    #[arg(long, requires = "shard", conflicts_with_all = ["at_timestamp", "after_sequence"])]
    at_sequence: Option<String>,
    /// Start right after this record (with --shard).
    #[arg(long, requires = "shard", conflicts_with = "at_timestamp")]
    after_sequence: Option<String>,
    /// Only this shard (and, with --follow, its children).
    #[arg(long)]
    shard: Option<String>,
    /// Stop after this many user records.
    #[arg(long)]
    limit: Option<u64>,
    /// Keep reading as records arrive (and shards split or merge) until interrupted.
    #[arg(long)]
    follow: bool,
}

/// How often a caught-up shard is read again while following (Kinesis allows 5 reads a second
/// per shard, shared with every other reader).
const POLL: Duration = Duration::from_secs(1);

/// What is left to read, and in which order.
struct Plan {
    /// Shards to read now, with their iterator.
    reading: VecDeque<(String, String)>,
    /// Shards waiting for their parents: shard → parents not yet read to their end.
    waiting: HashMap<String, HashSet<String>>,
    /// Every shard planned (so a child announced twice is planned once).
    planned: HashSet<String>,
    /// Shards read to their end.
    done: HashSet<String>,
}

fn policy() -> RetryPolicy {
    RetryPolicy::new(
        6,
        BackoffConfig::new(Duration::from_millis(200), Duration::from_secs(5)).expect("valid"),
    )
}

struct Reader {
    kinesis: SdkKinesis,
    stream: StreamRef,
}

impl Reader {
    async fn iterator(&self, shard: &str, start: &IteratorStart) -> Result<String, AwsError> {
        retry(policy(), AwsError::class, || {
            self.kinesis.get_shard_iterator(&self.stream, shard, start)
        })
        .await
    }
}

pub(crate) async fn run(
    config: &aws_config::SdkConfig,
    args: TailArgs,
    out: &Output,
) -> Result<(), Failure> {
    let reader = Reader {
        kinesis: SdkKinesis::new(&aws_sdk_kinesis::Client::new(config), CALL_TIMEOUT),
        stream: StreamRef::new(&args.stream),
    };
    let start = match (&args.at_sequence, &args.after_sequence, args.at_timestamp) {
        (Some(seq), _, _) => IteratorStart::AtSequence(seq.clone()),
        (_, Some(seq), _) => IteratorStart::AfterSequence(seq.clone()),
        (_, _, Some(at)) => IteratorStart::AtTimestamp(at),
        _ if args.from == From::Latest => IteratorStart::Latest,
        _ => IteratorStart::TrimHorizon,
    };
    let shards: Vec<Shard> = retry(policy(), AwsError::class, || {
        reader.kinesis.list_shards(&reader.stream, ShardFilter::All)
    })
    .await?;
    let mut plan = Plan {
        reading: VecDeque::new(),
        waiting: HashMap::new(),
        planned: HashSet::new(),
        done: HashSet::new(),
    };
    let listed: HashSet<&str> = shards.iter().map(|s| s.id.as_str()).collect();
    let first: Vec<&Shard> = match &args.shard {
        Some(id) => {
            let shard = shards
                .iter()
                .find(|s| s.id == *id)
                .ok_or_else(|| format!("stream {} has no shard {id}", args.stream))?;
            vec![shard]
        }
        // From the tip: the open shards; else every shard, children after their parents.
        None if start == IteratorStart::Latest => shards.iter().filter(|s| !s.closed).collect(),
        None => shards.iter().collect(),
    };
    for shard in first {
        plan.planned.insert(shard.id.clone());
        let parents: HashSet<String> = (shard.parents.iter())
            .filter(|p| args.shard.is_none() && listed.contains(p.as_str()))
            .cloned()
            .collect();
        if parents.is_empty() {
            let iterator = reader.iterator(&shard.id, &start).await?;
            plan.reading.push_back((shard.id.clone(), iterator));
        } else {
            plan.waiting.insert(shard.id.clone(), parents);
        }
    }
    // Children start where their parents ended (a timestamp still applies to them).
    let child_start = match &start {
        IteratorStart::AtTimestamp(at) => IteratorStart::AtTimestamp(*at),
        _ => IteratorStart::TrimHorizon,
    };
    let mut printed = 0u64;
    let limit = args.limit.unwrap_or(u64::MAX);
    while printed < limit {
        let Some((shard, iterator)) = plan.reading.pop_front() else {
            break;
        };
        let page = retry(policy(), AwsError::class, || {
            reader.kinesis.get_records(&iterator, 10_000)
        })
        .await?;
        let count = page.records.len();
        for record in page.records {
            for user in user_records(&record) {
                if printed >= limit {
                    break;
                }
                print_record(out, &shard, &record, &user);
                printed += 1;
            }
        }
        match page.next_iterator {
            // Read to its end: its children become readable once all their parents are.
            None => {
                if args.shard.is_none() || args.follow {
                    for child in page.child_shards {
                        if plan.planned.insert(child.id.clone()) {
                            let parents = (child.parents.iter())
                                .filter(|p| plan.planned.contains(*p) && !plan.done.contains(*p))
                                .cloned()
                                .collect();
                            plan.waiting.insert(child.id, parents);
                        }
                    }
                }
                plan.done.insert(shard.clone());
                for parents in plan.waiting.values_mut() {
                    parents.remove(&shard);
                }
                let ready: Vec<String> = (plan.waiting.iter())
                    .filter(|(_, parents)| parents.is_empty())
                    .map(|(child, _)| child.clone())
                    .collect();
                for child in ready {
                    plan.waiting.remove(&child);
                    let iterator = reader.iterator(&child, &child_start).await?;
                    plan.reading.push_back((child, iterator));
                }
            }
            Some(next) => {
                let caught_up = count == 0 && page.millis_behind_latest.unwrap_or(0) == 0;
                if !caught_up || args.follow {
                    plan.reading.push_back((shard, next));
                }
                // Every shard read caught up: wait before asking again.
                if caught_up && args.follow && plan.reading.len() <= 1 {
                    tokio::time::sleep(POLL).await;
                } else if caught_up && args.follow {
                    tokio::time::sleep(POLL / plan.reading.len() as u32).await;
                }
            }
        }
    }
    Ok(())
}

/// A record's user records: its sub-records when it is an aggregate, else itself.
fn user_records(record: &kinesis_api::Record) -> Vec<User> {
    match deaggregate(&record.data) {
        Deaggregated::Aggregated(subs) => subs
            .into_iter()
            .map(|s| User {
                partition_key: s.partition_key.to_string(),
                explicit_hash_key: s.explicit_hash_key.map(|k| k.to_string()),
                data: s.data,
                sub_sequence: Some(s.sub_sequence_number),
            })
            .collect(),
        Deaggregated::Raw(_) => vec![User {
            partition_key: record.partition_key.clone(),
            explicit_hash_key: None,
            data: record.data.clone(),
            sub_sequence: None,
        }],
    }
}

struct User {
    partition_key: String,
    explicit_hash_key: Option<String>,
    data: bytes::Bytes,
    /// Its index in the aggregate; `None` for a record that was not aggregated.
    sub_sequence: Option<u64>,
}

fn print_record(out: &Output, shard: &str, record: &kinesis_api::Record, user: &User) {
    out.emit(
        || {
            let position = match user.sub_sequence {
                Some(sub) => format!("{}/{sub}", record.sequence_number),
                None => record.sequence_number.clone(),
            };
            format!(
                "{shard} {position} {} {}",
                user.partition_key,
                String::from_utf8_lossy(&user.data)
            )
        },
        || {
            let (field, data) = data_field(&user.data);
            let mut value = json!({
                "shard": shard,
                "sequence_number": record.sequence_number,
                "sub_sequence_number": user.sub_sequence.unwrap_or(0),
                "aggregated": user.sub_sequence.is_some(),
                "partition_key": user.partition_key,
                field: data,
            });
            if let Some(key) = &user.explicit_hash_key {
                value["explicit_hash_key"] = json!(key);
            }
            if let Some(at) = record.approximate_arrival {
                value["approximate_arrival"] =
                    json!(humantime::format_rfc3339_millis(at).to_string());
            }
            value
        },
    );
}
