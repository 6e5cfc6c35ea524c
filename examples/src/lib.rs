//! Helpers shared by the example binaries.

use std::error::Error;
use std::time::Duration;

/// Logs to stderr at `default` (e.g. `"info"`) unless `RUST_LOG` says otherwise, so the
/// libraries' warnings (a throttled shard, a lost lease, a failing processor) show.
pub fn init_logging(default: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// Resolves at the first SIGTERM (what orchestrators such as Kubernetes and systemd send) or
/// Ctrl-C (SIGINT).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Creates a stream and waits (polling every 50 ms, at most 60 s) until it is ACTIVE.
pub async fn create_stream(
    kinesis: &aws_sdk_kinesis::Client,
    name: &str,
    shards: i32,
) -> Result<(), Box<dyn Error>> {
    kinesis
        .create_stream()
        .stream_name(name)
        .shard_count(shards)
        .send()
        .await?;
    for _ in 0..1200 {
        let d = kinesis
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await?;
        if d.stream_description_summary()
            .is_some_and(|s| s.stream_status().as_str() == "ACTIVE")
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("stream {name} did not become ACTIVE").into())
}

/// Process figures for the benchmarks, read from `/proc` (Linux): the same numbers getrusage
/// reports, without `unsafe`.
pub mod proc_stats {
    use std::error::Error;

    /// User + system CPU seconds of this process so far.
    pub fn cpu_seconds() -> Result<f64, Box<dyn Error>> {
        let stat = std::fs::read_to_string("/proc/self/stat")?;
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        let rest = &stat[stat.rfind(')').ok_or("bad /proc/self/stat")? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        Ok((fields[11].parse::<f64>()? + fields[12].parse::<f64>()?) / 100.0)
    }

    /// Peak resident set size (VmHWM) in KiB.
    pub fn peak_rss_kib() -> Result<u64, Box<dyn Error>> {
        let status = std::fs::read_to_string("/proc/self/status")?;
        let line = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .ok_or("no VmHWM")?;
        Ok(line.split_whitespace().nth(1).ok_or("bad VmHWM")?.parse()?)
    }
}
