//! `kinesis-rs`: a command-line tool for people operating Kinesis streams and KCL fleets.
//!
//! - `put`: lines from stdin (or a file) through the producer (aggregated, retried);
//! - `tail`: a stream's user records (deaggregated), from any position, following children;
//! - `leases`: an application's lease table (a Java KCL's too), once or `--watch`ed;
//! - `streams`: create, describe, list, split, merge, delete.
//!
//! Endpoints, region and credentials come from the usual AWS environment (`AWS_REGION`,
//! `AWS_PROFILE`, `AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_KINESIS`, ...). Every command takes
//! `--json` for scripts. Exit status: 0 on success, 1 when a record failed or a call was refused,
//! 2 for a usage error.

mod leases;
mod output;
mod put;
mod streams;
mod tail;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// A command-line tool for Kinesis Data Streams and KCL lease tables.
#[derive(Debug, Parser)]
#[command(name = "kinesis-rs", version, about)]
struct Cli {
    /// Print JSON (one document, or one object per line for records) instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Put lines from stdin (or a file) as records, through the producer.
    Put(put::PutArgs),
    /// Print a stream's user records (deaggregated).
    Tail(tail::TailArgs),
    /// Show an application's lease table.
    Leases(leases::LeasesArgs),
    /// Create, describe, list, split, merge or delete streams.
    #[command(subcommand)]
    Streams(streams::StreamsCommand),
}

/// A failure the tool reports (with its causes) before exiting with status 1.
pub(crate) type Failure = Box<dyn std::error::Error + Send + Sync>;

/// Each AWS call's time limit.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The usual AWS environment, with every call attempt limited to [`CALL_TIMEOUT`] (the SDK's
/// own retries then retry it).
async fn sdk_config() -> aws_config::SdkConfig {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .operation_attempt_timeout(CALL_TIMEOUT)
        .build();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(timeouts)
        .load()
        .await
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = sdk_config().await;
    let out = output::Output::new(cli.json);
    let result = match cli.command {
        Command::Put(args) => put::run(&config, args, &out).await,
        Command::Tail(args) => tail::run(&config, args, &out).await,
        Command::Leases(args) => leases::run(&config, args, &out).await,
        Command::Streams(command) => streams::run(&config, command, &out).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The causes, each once (an error's text often repeats its source's).
            let mut message = format!("kinesis-rs: {e}");
            let mut source = e.source();
            while let Some(cause) = source {
                let cause_text = cause.to_string();
                if !message.contains(&cause_text) {
                    message.push_str(&format!(": {cause_text}"));
                }
                source = cause.source();
            }
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}
