//! The real Java KCL (3.1.3) as a child process, for the interop tests: `scripts/java-kcl.sh`
//! installs it and compiles `integration-tests/java/InteropConsumer.java`, which writes every
//! record it delivers and every checkpoint it stores to a file that this module reads.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;
use kinesis_format::ExtendedSequenceNumber;

use crate::{Endpoints, TestEnv};

/// One record the Java KCL delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JavaDelivery {
    /// The shard.
    pub shard: String,
    /// Its (sequence, sub-sequence) position.
    pub position: ExtendedSequenceNumber,
    /// The user record's partition key.
    pub key: String,
    /// Its data.
    pub data: Vec<u8>,
}

/// What the Java consumer wrote so far.
#[derive(Clone, Debug, Default)]
pub struct JavaOutput {
    /// Shards it initialised a processor for.
    pub initialized: Vec<String>,
    /// Records, in delivery order.
    pub deliveries: Vec<JavaDelivery>,
    /// Checkpoints it stored: (shard, position).
    pub checkpoints: Vec<(String, ExtendedSequenceNumber)>,
    /// Shards it finished (SHARD_END checkpointed).
    pub ended: Vec<String>,
    /// Shards whose processor was asked to stop (a shutdown, or a hand-off to another worker).
    pub shutdown_requested: Vec<String>,
    /// It stopped after a graceful shutdown.
    pub stopped: bool,
}

/// The classpath of the compiled consumer (installed once per test process).
fn classpath() -> &'static str {
    static CLASSPATH: OnceLock<String> = OnceLock::new();
    CLASSPATH.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/java-kcl.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "scripts/java-kcl.sh failed ({}): the Java KCL interop tests need Java 17+ with javac, python3 with pip, and PyPI",
            out.status
        );
        String::from_utf8(out.stdout)
            .expect("classpath")
            .trim()
            .to_owned()
    })
}

/// A running Java KCL worker; killed when dropped.
#[derive(Debug)]
pub struct JavaKcl {
    child: Child,
    output: PathBuf,
    log: PathBuf,
}

impl JavaKcl {
    /// Starts worker `worker` of application `app` (its lease table) on `stream`, reading from
    /// TRIM_HORIZON where the table has no checkpoint.
    pub fn start(env: &TestEnv, stream: &str, app: &str, worker: &str) -> JavaKcl {
        Self::start_with(env, stream, app, worker, &[])
    }

    /// The same, with the consumer's settings in `vars` (`INTEROP_MAX_RECORDS`,
    /// `INTEROP_BATCH_DELAY_MS`: see `InteropConsumer.java`).
    pub fn start_with(
        env: &TestEnv,
        stream: &str,
        app: &str,
        worker: &str,
        vars: &[(&str, &str)],
    ) -> JavaKcl {
        let dir = std::env::temp_dir().join(format!("java-kcl-{app}-{worker}"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (output, log) = (dir.join("output.txt"), dir.join("java.log"));
        let _ = std::fs::remove_file(&output);
        let mut command = Command::new("java");
        command
            .arg("-cp")
            .arg(classpath())
            .arg("InteropConsumer")
            .args([stream, app, worker])
            .arg(&output)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("log file"))
            .stderr(Stdio::inherit())
            .envs(vars.iter().copied());
        if let Endpoints::Local { kinesis, dynamodb } = &env.endpoints {
            command
                .env("AWS_ENDPOINT_URL_KINESIS", kinesis)
                .env("AWS_ENDPOINT_URL_DYNAMODB", dynamodb);
        }
        let child = command.spawn().expect("java starts");
        JavaKcl { child, output, log }
    }

    /// Everything it wrote so far.
    pub fn output(&self) -> JavaOutput {
        read_output(&std::fs::read_to_string(&self.output).unwrap_or_default())
    }

    /// Waits until `condition` holds for its output, failing the test after `timeout` (or when
    /// the process exits first) with the end of its log.
    pub async fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        condition: impl Fn(&JavaOutput) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let output = self.output();
            if condition(&output) {
                return;
            }
            let exited = self.child.try_wait().expect("java status");
            if exited.is_some() || tokio::time::Instant::now() >= deadline {
                panic!(
                    "Java KCL: waiting for {what}: {} after {timeout:?}; {} records delivered, {} checkpoints; log:\n{}",
                    exited.map_or("timed out".into(), |s| format!("exited ({s})")),
                    output.deliveries.len(),
                    output.checkpoints.len(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// SIGTERM: the scheduler shuts down gracefully; waits until the process has exited.
    pub async fn terminate(&mut self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
        self.wait_exit(Duration::from_secs(60)).await;
    }

    /// SIGKILL: stops dead (no last checkpoint, leases not released).
    pub async fn kill(&mut self) {
        self.child.kill().expect("kill -9");
        self.wait_exit(Duration::from_secs(10)).await;
    }

    async fn wait_exit(&mut self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.child.try_wait().expect("java status").is_none() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "Java KCL did not exit within {timeout:?}; log:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for JavaKcl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A lease table's rows as DynamoDB stores them (the Java KCL's attribute names): what the
/// interop tests compare before and after the other side's writes.
pub mod rows {
    use std::collections::{BTreeMap, HashMap};

    use aws_sdk_dynamodb::types::AttributeValue;
    use kinesis_format::{ExtendedSequenceNumber, SequenceNumber};

    use crate::TestEnv;

    /// The lease rows as stored, by lease key.
    pub async fn rows(
        env: &TestEnv,
        table: &str,
    ) -> BTreeMap<String, HashMap<String, AttributeValue>> {
        let items = env
            .dynamodb
            .scan()
            .table_name(table)
            .consistent_read(true)
            .send()
            .await
            .expect("Scan")
            .items
            .unwrap_or_default();
        items
            .into_iter()
            .filter_map(|item| Some((item.get("leaseKey")?.as_s().ok()?.clone(), item)))
            .collect()
    }

    /// A row's stored checkpoint, when it is a position.
    pub fn checkpoint(row: &HashMap<String, AttributeValue>) -> Option<ExtendedSequenceNumber> {
        let sequence = SequenceNumber::parse(row.get("checkpoint")?.as_s().ok()?).ok()?;
        let sub = row
            .get("checkpointSubSequenceNumber")
            .and_then(|v| v.as_n().ok())
            .map_or(0, |n| n.parse().expect("a number"));
        Some(ExtendedSequenceNumber::new(sequence, sub))
    }

    /// Each lease's (leaseOwner, checkpointOwner).
    pub async fn owners(env: &TestEnv, app: &str) -> BTreeMap<String, (String, Option<String>)> {
        let text = |row: &HashMap<String, AttributeValue>, a: &str| {
            row.get(a).and_then(|v| v.as_s().ok()).cloned()
        };
        (rows(env, app).await.into_iter())
            .map(|(k, row)| {
                let owner = text(&row, "leaseOwner").unwrap_or_default();
                (k, (owner, text(&row, "checkpointOwner")))
            })
            .collect()
    }
}

fn position(sequence: &str, sub: &str) -> ExtendedSequenceNumber {
    ExtendedSequenceNumber::new(
        kinesis_format::SequenceNumber::parse(sequence).expect("a sequence number"),
        sub.parse().expect("a sub-sequence number"),
    )
}

/// Parses the consumer's output file (a line cut short by a kill is ignored).
pub fn read_output(text: &str) -> JavaOutput {
    let mut out = JavaOutput::default();
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        match f.as_slice() {
            ["INIT", shard, ..] => out.initialized.push((*shard).to_owned()),
            ["DELIVER", shard, sequence, sub, key, data] => {
                let Ok(data) = base64::engine::general_purpose::STANDARD.decode(data) else {
                    continue;
                };
                out.deliveries.push(JavaDelivery {
                    shard: (*shard).to_owned(),
                    position: position(sequence, sub),
                    key: (*key).to_owned(),
                    data,
                });
            }
            ["CHECKPOINT", shard, sequence, sub] => out
                .checkpoints
                .push(((*shard).to_owned(), position(sequence, sub))),
            ["ENDED", shard] => out.ended.push((*shard).to_owned()),
            ["SHUTDOWN_REQUESTED", shard] => out.shutdown_requested.push((*shard).to_owned()),
            ["STOPPED"] => out.stopped = true,
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_consumers_lines_are_read_and_a_cut_line_is_ignored() {
        let text = "STARTED\nINIT shardId-1 {TRIM_HORIZON}\nDELIVER shardId-1 49 2 k aGk=\nCHECKPOINT shardId-1 49 2\nENDED shardId-1\nSTOPPED\nDELIVER shardId-1 5";
        let out = read_output(text);
        assert_eq!(out.initialized, ["shardId-1"]);
        assert_eq!(out.deliveries.len(), 1);
        assert_eq!(out.deliveries[0].data, b"hi");
        assert_eq!(out.deliveries[0].position, position("49", "2"));
        assert_eq!(
            out.checkpoints,
            [("shardId-1".to_owned(), position("49", "2"))]
        );
        assert_eq!(out.ended, ["shardId-1"]);
        assert!(out.stopped);
    }
}
