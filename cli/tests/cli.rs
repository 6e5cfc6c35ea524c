//! The `kinesis-rs` binary driven as an operator would, against kinesis-mock and DynamoDB Local:
//! its output (`--json`) checked against what was put and what the lease table holds.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use integration_tests::consume::{DeliveryLog, spawn_worker, test_worker_config};
use integration_tests::{Endpoints, TestEnv, TestTable, random_name};
use kcl::{InitialPosition, Worker};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_kinesis-rs");

/// Runs the tool with `args` (and `stdin`); its stdout, or the test fails with its stderr. Fails
/// when no test endpoint is configured (the tool would otherwise reach whatever AWS the
/// environment names).
fn run(args: &[&str], stdin: &str) -> String {
    if let Err(e) = Endpoints::from_vars(|name| std::env::var(name).ok()) {
        panic!("{e}");
    }
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kinesis-rs starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("stdin written");
    let out = child.wait_with_output().expect("kinesis-rs ends");
    assert!(
        out.status.success(),
        "kinesis-rs {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// A stream name for one test; the stream is deleted when dropped (through the tool).
struct Stream(String);

impl Stream {
    fn new() -> Stream {
        if let Err(e) = Endpoints::from_vars(|name| std::env::var(name).ok()) {
            panic!("{e}");
        }
        Stream(random_name("cli"))
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let _ = Command::new(BIN)
            .args(["streams", "delete", &self.0])
            .output();
    }
}

#[test]
fn streams_put_and_tail_across_a_split() {
    let stream = Stream::new();
    let created = &json_lines(&run(
        &["streams", "create", &stream.0, "--shards", "2", "--json"],
        "",
    ))[0];
    assert_eq!(created["status"], "ACTIVE");
    assert_eq!(created["shards"].as_array().unwrap().len(), 2);

    let lines: String = (0..500)
        .map(|i| format!("{{\"user\":\"u{i}\",\"n\":{i}}}\n"))
        .collect();
    let put = &json_lines(&run(
        &["put", &stream.0, "--key-field", "user", "--json"],
        &lines,
    ))[0];
    assert_eq!(
        (put["records"].as_u64(), put["stored"].as_u64()),
        (Some(500), Some(500))
    );
    assert!(
        put["kinesis_records"].as_u64().unwrap() < 500,
        "aggregated: {put}"
    );

    let parent = created["shards"][0]["shard"].as_str().unwrap().to_owned();
    let split = &json_lines(&run(
        &["streams", "split", &stream.0, &parent, "--json"],
        "",
    ))[0];
    assert_eq!(split["shards"].as_array().unwrap().len(), 4);
    let more: String = (500..600)
        .map(|i| format!("{{\"user\":\"u{i}\",\"n\":{i}}}\n"))
        .collect();
    run(&["put", &stream.0, "--key-field", "user"], &more);

    let limited = json_lines(&run(&["tail", &stream.0, "--limit", "7", "--json"], ""));
    assert_eq!(limited.len(), 7);
    let records = json_lines(&run(&["tail", &stream.0, "--json"], ""));
    let data: HashSet<String> = records
        .iter()
        .map(|r| r["data"].as_str().unwrap().to_owned())
        .collect();
    let expected: HashSet<String> = (0..600)
        .map(|i| format!("{{\"user\":\"u{i}\",\"n\":{i}}}"))
        .collect();
    assert_eq!(data, expected);
    assert_eq!(records.len(), 600, "each record once");
    // The split's children come after their parent, and each record under its own key.
    let last_of_parent = records.iter().rposition(|r| r["shard"] == parent.as_str());
    let first_of_child = records.iter().position(|r| {
        let shard = r["shard"].as_str().unwrap();
        shard != parent
            && split["shards"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["shard"] == shard && s["parent"] == parent.as_str())
    });
    assert!(
        last_of_parent < first_of_child,
        "{last_of_parent:?} {first_of_child:?}"
    );
    for r in &records {
        let n: Value = serde_json::from_str(r["data"].as_str().unwrap()).unwrap();
        assert_eq!(r["partition_key"], n["user"]);
    }
}

#[test]
fn tail_follow_prints_records_as_they_arrive() {
    let stream = Stream::new();
    run(&["streams", "create", &stream.0], "");
    let mut tail = Command::new(BIN)
        .args(["tail", &stream.0, "--from", "latest", "--follow", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("tail starts");
    // From the tip: only records put after it has its iterator (it reads every second).
    std::thread::sleep(Duration::from_secs(2));
    run(&["put", &stream.0, "--key", "k"], "a\nb\nc\n");
    let mut lines = BufReader::new(tail.stdout.take().unwrap()).lines();
    let got: Vec<String> = (0..3)
        .map(|_| {
            let line = lines.next().expect("a line").expect("read");
            serde_json::from_str::<Value>(&line).unwrap()["data"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    tail.kill().expect("stopped");
    let _ = tail.wait();
    assert_eq!(got, ["a", "b", "c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_shows_a_fleet_then_its_expired_leases() {
    let env = TestEnv::new().await;
    let stream = env.create_stream(2).await;
    let app = random_name("cli-app");
    let _table = TestTable::adopt(&env, app.clone());
    let log = DeliveryLog::default();
    let worker = Worker::new(
        &env.sdk_config,
        &app,
        &stream.name,
        log.factory("w-1"),
        test_worker_config("w-1", InitialPosition::TrimHorizon),
    );
    let (stop, task) = spawn_worker(worker);
    let lines: String = (0..100).map(|i| format!("line {i}\n")).collect();
    let name = stream.name.clone();
    tokio::task::spawn_blocking(move || run(&["put", &name], &lines))
        .await
        .unwrap();
    log.wait_for("every record", Duration::from_secs(30), |l| {
        l.distinct() == 100
    })
    .await;

    let args = ["leases", &app, "--lag", "--stream", &stream.name, "--json"];
    let table = &json_lines(&run(&args, ""))[0];
    let leases = table["leases"].as_array().unwrap();
    assert_eq!(leases.len(), 2, "{table}");
    for lease in leases {
        assert_eq!(lease["owner"], "w-1", "{lease}");
        assert_eq!(lease["state"], "owned");
        assert!(
            lease["checkpoint"].as_str().unwrap().starts_with('4'),
            "{lease}"
        );
        assert_eq!(lease["millis_behind_latest"], 0, "caught up: {lease}");
    }
    let text = run(&["leases", &app], "");
    assert!(
        text.contains("LEASE") && text.contains("w-1") && text.contains("2 leases"),
        "{text}"
    );

    // Stopped dead: its leases stay owned, and --watch sees their counters stand still.
    stop.stop_now();
    task.await.unwrap().unwrap();
    let mut watch = Command::new(BIN)
        .args([
            "leases",
            &app,
            "--watch",
            "--json",
            "--interval",
            "200ms",
            "--failover",
            "1s",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("watch starts");
    let mut states = BTreeMap::new();
    let reader = BufReader::new(watch.stdout.take().unwrap());
    for line in reader.lines().take(20) {
        let doc: Value = serde_json::from_str(&line.unwrap()).unwrap();
        for lease in doc["leases"].as_array().unwrap() {
            states.insert(lease["lease_key"].to_string(), lease["state"].to_string());
        }
        if states.values().all(|s| s == "\"expired\"") {
            break;
        }
    }
    watch.kill().expect("stopped");
    let _ = watch.wait();
    assert!(
        states.len() == 2 && states.values().all(|s| s == "\"expired\""),
        "{states:?}"
    );
}
