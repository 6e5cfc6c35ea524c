//! `put`: one record per input line, through the producer (aggregated, collected, rate-limited
//! and retried as any application's records), then a summary.

use std::path::PathBuf;
use std::time::Instant;

use bytes::Bytes;
use clap::Args;
use kpl::{Producer, ProducerConfig, UserRecord};
use rand::Rng;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::Failure;
use crate::output::{Output, thousands};

#[derive(Debug, Args)]
pub(crate) struct PutArgs {
    /// The stream (name or ARN).
    stream: String,
    /// Read lines from this file instead of stdin.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Every record's partition key (default: a random key per record).
    #[arg(long, conflicts_with = "key_field")]
    key: Option<String>,
    /// Read each line as a JSON object and use this field (a string or a number) as its
    /// partition key; a line without it fails.
    #[arg(long)]
    key_field: Option<String>,
}

/// How a line's partition key is chosen.
enum KeyFrom {
    Fixed(String),
    Random,
    Field(String),
}

impl KeyFrom {
    fn key(&self, line: &str) -> Result<String, String> {
        match self {
            KeyFrom::Fixed(key) => Ok(key.clone()),
            KeyFrom::Random => Ok(format!("{:032x}", rand::rng().random::<u128>())),
            KeyFrom::Field(field) => {
                let value: serde_json::Value =
                    serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
                match value.get(field) {
                    Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(s.clone()),
                    Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
                    _ => Err(format!("no string or number field {field:?}")),
                }
            }
        }
    }
}

pub(crate) async fn run(
    config: &aws_config::SdkConfig,
    args: PutArgs,
    out: &Output,
) -> Result<(), Failure> {
    let key_from = match (args.key, args.key_field) {
        (Some(key), _) => KeyFrom::Fixed(key),
        (None, Some(field)) => KeyFrom::Field(field),
        (None, None) => KeyFrom::Random,
    };
    let input: Box<dyn tokio::io::AsyncRead + Unpin + Send> = match &args.file {
        Some(path) => Box::new(
            tokio::fs::File::open(path)
                .await
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        ),
        None => Box::new(tokio::io::stdin()),
    };
    let producer = Producer::new(config, ProducerConfig::default())?;
    let started = Instant::now();
    let bar = out.progress(None, "put");
    let mut lines = BufReader::new(input).lines();
    let mut pending = Vec::new();
    let mut failed = 0u64;
    let mut first_failure: Option<String> = None;
    let mut fail = |why: String| {
        failed += 1;
        first_failure.get_or_insert(why);
    };
    let mut line_number = 0u64;
    while let Some(line) = lines.next_line().await? {
        line_number += 1;
        match key_from.key(&line) {
            Ok(key) => {
                let record = UserRecord::new(args.stream.as_str(), key, Bytes::from(line));
                match producer.put(record).await {
                    Ok(future) => pending.push(future),
                    Err(e) => fail(format!("line {line_number}: {e}")),
                }
            }
            Err(why) => fail(format!("line {line_number}: {why}")),
        }
        bar.inc(1);
    }
    bar.set_message("waiting for the last records");
    let records = line_number;
    for future in pending {
        if let Err(e) = future.await {
            fail(e.to_string());
        }
    }
    let stats = producer.stats();
    producer.shutdown().await;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let stored = records - failed;
    let rate = stored as f64 / seconds.max(1e-9);
    out.emit(
        || {
            let mut text = format!(
                "put {} of {} records to {} ({} Kinesis records in {} PutRecords calls) in {seconds:.2} s: {} records/s",
                thousands(stored),
                thousands(records),
                args.stream,
                thousands(stats.kinesis_records_put),
                thousands(stats.put_records_calls),
                thousands(rate as u64),
            );
            if let Some(why) = &first_failure {
                text.push_str(&format!("; {failed} failed (first: {why})"));
            }
            text
        },
        || {
            json!({
                "stream": args.stream,
                "records": records,
                "stored": stored,
                "failed": failed,
                "first_failure": first_failure,
                "kinesis_records": stats.kinesis_records_put,
                "put_records_calls": stats.put_records_calls,
                "retries": stats.retries,
                "seconds": seconds,
                "records_per_second": rate,
            })
        },
    );
    if failed > 0 {
        return Err(format!("{failed} of {records} records were not stored").into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_fixed_random_or_from_a_field() {
        assert_eq!(KeyFrom::Fixed("k".into()).key("x").unwrap(), "k");
        let (a, b) = (KeyFrom::Random.key("x"), KeyFrom::Random.key("x"));
        assert_ne!(a.unwrap(), b.unwrap());
        let field = KeyFrom::Field("user".into());
        assert_eq!(field.key(r#"{"user":"ann","n":1}"#).unwrap(), "ann");
        assert_eq!(KeyFrom::Field("n".into()).key(r#"{"n":12}"#).unwrap(), "12");
        assert!(field.key(r#"{"n":1}"#).unwrap_err().contains("user"));
        assert!(field.key("plain text").unwrap_err().contains("not JSON"));
    }
}
