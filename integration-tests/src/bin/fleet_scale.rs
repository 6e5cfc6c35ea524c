//! The fleet at scale, as a benchmark (not a test): figures, no assertions.
//!
//! ```text
//! cargo run --release -p integration-tests --bin fleet_scale                 # 100 workers, 10,000 shards, 20 ms
//! cargo run --release -p integration-tests --bin fleet_scale -- 20 2000 20 600   # WORKERS SHARDS LATENCY_MS LIMIT_S
//! scripts/with-local-aws.sh cargo run --release -p integration-tests --bin fleet_scale -- dynamodb 1000
//! ```
//!
//! The simulation (tokio's paused clock, in-memory Kinesis and lease store with the given latency
//! per call, the workers' default settings) reports, in simulated time: from a cold start to every
//! shard processed and to balance; after 10 workers join, until each holds a lease and until the
//! fleet is balanced; after 10 workers crash, until every shard is processed again (each wait
//! gives up after LIMIT_S simulated seconds, default 600, and the spread of leases is shown); lease-store calls per second per worker at steady state; and how long one
//! worker holding 1,000 leases takes to renew them all. `dynamodb` measures that last figure
//! against a real DynamoDB endpoint (DynamoDB Local), in real time.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use integration_tests::simulation::invariants::{imbalance, unprocessed};
use integration_tests::simulation::journal::Journal;
use integration_tests::simulation::probe::{Gate, ProbedStore, StoreCalls};
use integration_tests::simulation::{Fleet, until};
use integration_tests::{TestEnv, TestTable, random_name};
use kcl::leases::{DynamoDbLeaseStore, LeaseStore, MemoryLeaseStore};
use kcl::{
    Checkpointer, InitialPosition, ProcessRecordsInput, ProcessorResult, RecordProcessor, Worker,
    WorkerConfig,
};
use kinesis_api::memory::MemoryKinesis;
use kinesis_api::{Kinesis, ShardFilter, StreamRef};

fn show(what: &str, took: Option<Duration>, wall: std::time::Instant) {
    match took {
        Some(t) => println!(
            "{what}: {:.1} s simulated ({:.1} s to compute)",
            t.as_secs_f64(),
            wall.elapsed().as_secs_f64()
        ),
        None => println!("{what}: not within the limit"),
    }
}

/// A processor that does nothing (the benchmark measures the leases, not the records).
struct Idle;

#[async_trait]
impl RecordProcessor for Idle {
    async fn process_records(&mut self, _input: ProcessRecordsInput<'_>) -> ProcessorResult {
        Ok(())
    }

    async fn shard_ended(&mut self, checkpointer: &Checkpointer) -> ProcessorResult {
        checkpointer.checkpoint().await?;
        Ok(())
    }
}

fn config() -> WorkerConfig {
    WorkerConfig::default().initial_position(InitialPosition::TrimHorizon)
}

async fn open_shards(kinesis: &MemoryKinesis) -> Vec<String> {
    let shards = kinesis
        .list_shards(&StreamRef::new("s"), ShardFilter::Open)
        .await;
    shards.expect("shards").into_iter().map(|s| s.id).collect()
}

/// Every open shard processed; and, with `even`, the leases spread evenly too (one listing).
async fn fleet_settled(fleet: &Fleet, open: &[String], even: bool) -> bool {
    let leases = fleet.store.list().await.unwrap_or_default();
    let live = fleet.live();
    let now = fleet.journal.now();
    (!even || imbalance(&leases, &live).is_none())
        && fleet
            .journal
            .read(|e| unprocessed(open, &leases, &live, e, now))
            .is_empty()
}

/// The fewest and most unfinished leases a running worker holds.
async fn spread(fleet: &Fleet) {
    let leases = fleet.store.list().await.unwrap_or_default();
    let live = fleet.live();
    let mut held: std::collections::HashMap<&str, usize> =
        live.iter().map(|w| (w.as_str(), 0)).collect();
    for l in leases.iter().filter(|l| !l.is_finished()) {
        if let Some(n) = l.owner.as_deref().and_then(|o| held.get_mut(o)) {
            *n += 1;
        }
    }
    let (min, max) = (held.values().min(), held.values().max());
    println!("  leases per worker: fewest {min:?}, most {max:?}");
}

async fn simulate(workers: usize, shards: u32, latency: Duration, balance_limit: Duration) {
    println!(
        "{workers} workers, {shards} shards, lease-store latency {latency:?}, default worker settings"
    );
    let kinesis = Arc::new(MemoryKinesis::with_seed(1));
    kinesis.create_stream("s", shards);
    let store = Arc::new(MemoryLeaseStore::new());
    store.set_latency(latency);
    let mut fleet = Fleet::new(kinesis.clone(), store, workers, config(), 1, false);
    for w in 0..workers {
        fleet.start(w, format!("w{w}"));
    }
    let open = open_shards(&kinesis).await;
    let (step, limit) = (Duration::from_secs(1), balance_limit);

    let wall = std::time::Instant::now();
    let cold = until(step, limit, async || {
        fleet_settled(&fleet, &open, false).await
    })
    .await;
    show("cold start: every shard processed", cold, wall);
    let wall = std::time::Instant::now();
    let settled = until(step, limit, async || {
        fleet_settled(&fleet, &open, true).await
    })
    .await;
    show("cold start: balanced, after that", settled, wall);
    spread(&fleet).await;

    let before = fleet.store_calls.all.load(Ordering::Relaxed);
    let window = Duration::from_secs(60);
    tokio::time::sleep(window).await;
    let calls = fleet.store_calls.all.load(Ordering::Relaxed) - before;
    println!(
        "lease-store calls per second per worker: {:.2} ({calls} calls in {window:?})",
        calls as f64 / window.as_secs_f64() / workers as f64
    );

    let joining: Vec<usize> = (0..10).map(|_| fleet.add_slot()).collect();
    for &slot in &joining {
        fleet.start(slot, format!("joined{slot}"));
    }
    let wall = std::time::Instant::now();
    let busy = until(step, limit, async || {
        let leases = fleet.store.list().await.unwrap_or_default();
        let ids: Vec<&str> = joining.iter().filter_map(|&s| fleet.id(s)).collect();
        ids.iter()
            .all(|id| leases.iter().any(|l| l.owner.as_deref() == Some(*id)))
    })
    .await;
    show("10 workers join: each holds a lease", busy, wall);
    let wall = std::time::Instant::now();
    let joined = until(step, limit, async || {
        fleet_settled(&fleet, &open, true).await
    })
    .await;
    show("10 workers join: balanced", joined, wall);
    spread(&fleet).await;

    for slot in 0..10 {
        fleet.crash(slot).await.expect("crash");
    }
    let wall = std::time::Instant::now();
    let recovered = until(step, limit, async || {
        fleet_settled(&fleet, &open, false).await
    })
    .await;
    show(
        "10 workers crash: every shard processed again",
        recovered,
        wall,
    );
    spread(&fleet).await;
    fleet.shutdown_all().await.expect("shutdown");

    let store = Arc::new(MemoryLeaseStore::new());
    store.set_latency(latency);
    renewal_round(store, 1_000).await;
}

/// One worker holding `leases` leases on `store`: how long it takes to renew them all.
async fn renewal_round(store: Arc<dyn LeaseStore>, leases: u32) {
    let kinesis = Arc::new(MemoryKinesis::with_seed(2));
    kinesis.create_stream("s", leases);
    let calls = Arc::new(StoreCalls::default());
    let probed = Arc::new(ProbedStore {
        inner: store.clone(),
        worker: "solo".into(),
        gate: Gate::default(),
        journal: Journal::default(),
        calls: calls.clone(),
    });
    let config = config().worker_id("solo");
    // The default: a third of the default failover time.
    let renew_interval = Duration::from_secs(10) / 3;
    let factory = |_: &str| -> Box<dyn RecordProcessor> { Box::new(Idle) };
    let worker = Worker::with_kinesis(kinesis, probed, "s", factory, config);
    let handle = worker.shutdown_handle();
    let task = tokio::spawn(worker.run());
    let held = until(
        Duration::from_millis(500),
        Duration::from_secs(600),
        async || {
            let all = store.list().await.unwrap_or_default();
            all.iter()
                .filter(|l| l.owner.as_deref() == Some("solo"))
                .count()
                == leases as usize
        },
    )
    .await;
    if held.is_none() {
        println!("renewals: the worker did not take all {leases} leases");
        return;
    }
    let renewed = || calls.renewed.load(Ordering::Relaxed);
    let mut rounds = Vec::new();
    for _ in 0..3 {
        // Between two rounds: no renewal for a while.
        let mut last = renewed();
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = renewed();
            if now == last {
                break;
            }
            last = now;
        }
        let step = Duration::from_millis(2);
        until(step, renew_interval * 2, async || renewed() > last).await;
        let took = until(step, renew_interval * 4, async || {
            renewed() >= last + u64::from(leases)
        })
        .await;
        rounds.push(took.map_or(f64::NAN, |t| t.as_secs_f64() * 1000.0));
    }
    println!(
        "one worker holding {leases} leases renews them all in {rounds:.0?} ms (from the first renewal landing to the last; renew interval {renew_interval:?})"
    );
    handle.shutdown();
    task.await.expect("worker task").expect("worker");
}

fn main() {
    if let Ok(filter) = std::env::var("SCALE_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_ansi(false)
            .init();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number =
        |i: usize, default: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    if args.first().map(String::as_str) == Some("dynamodb") {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async {
            let env = TestEnv::new().await;
            let name = random_name("scale");
            let _table = TestTable::adopt(&env, name.clone());
            let store = Arc::new(DynamoDbLeaseStore::new(env.dynamodb.clone(), name));
            store.ensure_table().await.expect("lease table");
            println!("DynamoDB at {:?}, real time", env.endpoints);
            renewal_round(store, number(1, 1_000) as u32).await;
        });
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    runtime.block_on(simulate(
        number(0, 100) as usize,
        number(1, 10_000) as u32,
        Duration::from_millis(number(2, 20)),
        Duration::from_secs(number(3, 600)),
    ));
}
