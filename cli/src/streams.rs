//! `streams`: create, describe, list, split, merge and delete streams (for local work, tests
//! and small operations). Creating and resharding wait until the stream is ACTIVE again.

use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::types::StreamStatus;
use clap::Subcommand;
use kinesis_api::{Kinesis, SdkKinesis, Shard, ShardFilter, StreamRef};
use serde_json::json;

use crate::output::Output;
use crate::{CALL_TIMEOUT, Failure};

#[derive(Debug, Subcommand)]
pub(crate) enum StreamsCommand {
    /// Create a stream (provisioned) and wait until it is ACTIVE.
    Create {
        /// Its name.
        name: String,
        /// How many shards.
        #[arg(long, default_value_t = 1)]
        shards: i32,
    },
    /// Describe a stream and its shards.
    Describe {
        /// Its name.
        name: String,
    },
    /// List the streams.
    List,
    /// Split a shard (in the middle of its hash range unless --at says where), and wait.
    Split {
        /// The stream.
        name: String,
        /// The shard to split.
        shard: String,
        /// The first hash key of the new upper shard (decimal).
        #[arg(long)]
        at: Option<u128>,
    },
    /// Merge two adjacent shards, and wait.
    Merge {
        /// The stream.
        name: String,
        /// One shard.
        shard: String,
        /// The shard whose hash range is adjacent to it.
        adjacent: String,
    },
    /// Delete a stream (and its enhanced fan-out consumers).
    Delete {
        /// Its name.
        name: String,
    },
}

pub(crate) async fn run(
    config: &aws_config::SdkConfig,
    command: StreamsCommand,
    out: &Output,
) -> Result<(), Failure> {
    let client = Client::new(config);
    match command {
        StreamsCommand::Create { name, shards } => {
            client
                .create_stream()
                .stream_name(&name)
                .shard_count(shards)
                .send()
                .await?;
            wait_active(&client, &name, out).await?;
            describe(&client, config, &name, out).await
        }
        StreamsCommand::Describe { name } => describe(&client, config, &name, out).await,
        StreamsCommand::List => {
            let mut names = Vec::new();
            let mut pages = client.list_streams().into_paginator().send();
            while let Some(page) = pages.next().await {
                names.extend(page?.stream_names);
            }
            out.emit(|| names.join("\n"), || json!({ "streams": names }));
            Ok(())
        }
        StreamsCommand::Split { name, shard, at } => {
            let at = match at {
                Some(at) => at,
                None => {
                    let shards = list_shards(config, &name).await?;
                    let found = shards
                        .iter()
                        .find(|s| s.id == shard)
                        .ok_or_else(|| format!("stream {name} has no shard {shard}"))?;
                    let (start, end) = (found.range.start.0, found.range.end.0);
                    start + (end - start) / 2 + 1
                }
            };
            client
                .split_shard()
                .stream_name(&name)
                .shard_to_split(&shard)
                .new_starting_hash_key(at.to_string())
                .send()
                .await?;
            wait_active(&client, &name, out).await?;
            describe(&client, config, &name, out).await
        }
        StreamsCommand::Merge {
            name,
            shard,
            adjacent,
        } => {
            client
                .merge_shards()
                .stream_name(&name)
                .shard_to_merge(&shard)
                .adjacent_shard_to_merge(&adjacent)
                .send()
                .await?;
            wait_active(&client, &name, out).await?;
            describe(&client, config, &name, out).await
        }
        StreamsCommand::Delete { name } => {
            client
                .delete_stream()
                .stream_name(&name)
                .enforce_consumer_deletion(true)
                .send()
                .await?;
            out.emit(
                || format!("deleting stream {name}"),
                || json!({"stream": name, "deleting": true}),
            );
            Ok(())
        }
    }
}

/// Every shard of the stream, open and closed (ListShards paging is the boundary's).
async fn list_shards(config: &aws_config::SdkConfig, name: &str) -> Result<Vec<Shard>, Failure> {
    let kinesis = SdkKinesis::new(&Client::new(config), CALL_TIMEOUT);
    Ok(kinesis
        .list_shards(&StreamRef::new(name), ShardFilter::All)
        .await?)
}

/// Waits (polling every 100 ms, at most 5 minutes) until the stream is ACTIVE.
async fn wait_active(client: &Client, name: &str, out: &Output) -> Result<(), Failure> {
    let bar = out.progress(None, &format!("waiting for {name} to be ACTIVE"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    loop {
        let summary = client
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await?;
        let status = summary
            .stream_description_summary()
            .map(|d| d.stream_status().clone());
        if status == Some(StreamStatus::Active) {
            bar.finish_and_clear();
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("stream {name} is still {status:?} after 5 minutes").into());
        }
        bar.tick();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn describe(
    client: &Client,
    config: &aws_config::SdkConfig,
    name: &str,
    out: &Output,
) -> Result<(), Failure> {
    let summary = client
        .describe_stream_summary()
        .stream_name(name)
        .send()
        .await?;
    let d = summary
        .stream_description_summary()
        .ok_or("DescribeStreamSummary without a description")?;
    let shards = list_shards(config, name).await?;
    let rows: Vec<serde_json::Value> = shards
        .iter()
        .map(|s| {
            json!({
                "shard": s.id,
                "parent": s.parents.first(),
                "adjacent_parent": s.parents.get(1),
                "starting_hash_key": s.range.start.to_string(),
                "ending_hash_key": s.range.end.to_string(),
                "open": !s.closed,
            })
        })
        .collect();
    let status = d.stream_status().as_str().to_owned();
    out.emit(
        || {
            let mut text = format!(
                "{} {} {status}, {} shards ({} open), retention {} h",
                d.stream_name(),
                d.stream_arn(),
                rows.len(),
                rows.iter().filter(|r| r["open"] == true).count(),
                d.retention_period_hours()
            );
            for r in &rows {
                text.push_str(&format!(
                    "\n  {} {} {}..{}{}",
                    r["shard"].as_str().unwrap_or("?"),
                    if r["open"] == true {
                        "open  "
                    } else {
                        "closed"
                    },
                    r["starting_hash_key"].as_str().unwrap_or("?"),
                    r["ending_hash_key"].as_str().unwrap_or("?"),
                    match (r["parent"].as_str(), r["adjacent_parent"].as_str()) {
                        (Some(p), Some(a)) => format!(" (from {p} + {a})"),
                        (Some(p), None) => format!(" (from {p})"),
                        _ => String::new(),
                    }
                ));
            }
            text
        },
        || {
            json!({
                "stream": d.stream_name(),
                "arn": d.stream_arn(),
                "status": status,
                "retention_hours": d.retention_period_hours(),
                "shards": rows,
            })
        },
    );
    Ok(())
}
