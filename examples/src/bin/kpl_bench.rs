//! Producer benchmark: puts N user records and reports user records/s, Kinesis records/s,
//! PutRecords calls, CPU-seconds per million user records and peak RSS of this process.
//!
//! ```text
//! kpl_bench [--records N] [--size BYTES] [--shards N] [--no-aggregation] [--ordered]
//!           [--single-thread] [--tasks N] [--endpoint URL | --fast [--latency-ms MS] | --null]
//! ```
//!
//! `--single-thread` runs everything (the feeding loop, the producer, the SDK) on one thread: the
//! CPU per record without cross-core traffic, and much less noise between runs. `--tasks N`
//! puts from N tasks at once (default 1), each awaiting its own results. `--ordered` turns on
//! the producer's ordered mode (one Kinesis record in flight per shard).
//!
//! `--endpoint URL` measures against a real endpoint (kinesis-mock from scripts/local-aws.sh);
//! `--fast` starts this same binary as a child process serving a minimal in-memory Kinesis
//! (ListShards and PutRecords only, nothing stored) on a loopback port, so the producer's own
//! ceiling shows and the server's CPU is not counted; `--latency-ms` makes it answer each
//! PutRecords that much later (a real endpoint's round trip, where ordered mode's one call per
//! shard at a time shows its cost). `--null` runs the producer on an in-process `Kinesis` that
//! answers PutRecords at once without any I/O (no SDK, no HTTP, no signing): the pipeline's own
//! cost, to compare with `--fast`. CPU time and peak RSS come from
//! `/proc/self/stat` and `/proc/self/status` (the same figures getrusage reports).

use std::error::Error;

use kinesis_examples::proc_stats::{cpu_seconds, peak_rss_kib};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use kinesis_format::HashKey;
use kpl::{Producer, ProducerConfig, UserRecord};
use serde_json::{Value, json};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ALLOCATOR_NAME: &str = if cfg!(feature = "mimalloc") {
    "mimalloc"
} else {
    "system"
};

#[derive(Debug)]
struct Args {
    records: usize,
    size: usize,
    shards: u32,
    aggregation: bool,
    ordered: bool,
    endpoint: Option<String>,
    fast: bool,
    null: bool,
    single_thread: bool,
    tasks: usize,
    serve: Option<u32>,
    latency_ms: u64,
}

fn args() -> Result<Args, Box<dyn Error>> {
    let mut a = Args {
        records: 1_000_000,
        size: 100,
        shards: 64,
        aggregation: true,
        ordered: false,
        endpoint: None,
        fast: false,
        null: false,
        single_thread: false,
        tasks: 1,
        serve: None,
        latency_ms: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--records" => a.records = value()?.parse()?,
            "--size" => a.size = value()?.parse()?,
            "--shards" => a.shards = value()?.parse()?,
            "--no-aggregation" => a.aggregation = false,
            "--ordered" => a.ordered = true,
            "--endpoint" => a.endpoint = Some(value()?),
            "--fast" => a.fast = true,
            "--null" => a.null = true,
            "--single-thread" => a.single_thread = true,
            "--tasks" => a.tasks = value()?.parse()?,
            "--serve-fast" => a.serve = Some(value()?.parse()?),
            "--latency-ms" => a.latency_ms = value()?.parse()?,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    Ok(a)
}

fn main() -> Result<(), Box<dyn Error>> {
    kinesis_examples::init_logging("warn");
    let args = args()?;
    let runtime = if args.single_thread {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
    };
    runtime.block_on(bench(args))
}

async fn bench(args: Args) -> Result<(), Box<dyn Error>> {
    if let Some(shards) = args.serve {
        return serve_fast(shards, args.latency_ms).await;
    }
    if args.null {
        return run(&args, "null", "bench").await;
    }
    let mut child = None;
    let (endpoint, stream) = if args.fast {
        let mut c = std::process::Command::new(std::env::current_exe()?)
            .args(["--serve-fast", &args.shards.to_string()])
            .args(["--latency-ms", &args.latency_ms.to_string()])
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(c.stdout.take().ok_or("child stdout")?),
            &mut line,
        )?;
        child = Some(c);
        (line.trim().to_owned(), "bench".to_owned())
    } else {
        let endpoint = args
            .endpoint
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL_KINESIS").ok())
            .ok_or("give --endpoint URL, --fast, or set AWS_ENDPOINT_URL_KINESIS")?;
        let stream = create_stream(&endpoint, args.shards).await?;
        (endpoint, stream)
    };
    let result = run(&args, &endpoint, &stream).await;
    if let Some(mut c) = child {
        let _ = c.kill();
        let _ = c.wait();
    }
    result
}

async fn client(endpoint: &str) -> aws_sdk_kinesis::Client {
    let config = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_kinesis::config::Credentials::new(
            "bench", "bench", None, None, "bench",
        ))
        .load()
        .await;
    aws_sdk_kinesis::Client::new(&config)
}

async fn create_stream(endpoint: &str, shards: u32) -> Result<String, Box<dyn Error>> {
    let kinesis = client(endpoint).await;
    let name = format!("bench-{}", std::process::id());
    kinesis_examples::create_stream(&kinesis, &name, i32::try_from(shards)?).await?;
    Ok(name)
}

async fn run(args: &Args, endpoint: &str, stream: &str) -> Result<(), Box<dyn Error>> {
    let config = ProducerConfig::default()
        .aggregation_enabled(args.aggregation)
        .ordered(args.ordered)
        .request_timeout(Duration::from_secs(60))
        .record_ttl(Duration::from_secs(600));
    let producer = if args.null {
        Producer::with_kinesis(Arc::new(NullKinesis::new(args.shards)), config)?
    } else {
        Producer::with_client(&client(endpoint).await, config)?
    };
    let data = Bytes::from(vec![b'x'; args.size]);
    // One shared stream name: UserRecord::new takes an Arc<str> without allocating.
    let stream: Arc<str> = Arc::from(stream);

    // The harness alone: making the same records and dropping them. Subtracted from the total
    // to give the producer's own share.
    let cpu_before = cpu_seconds()?;
    for i in 0..args.records {
        std::hint::black_box(make_record(&stream, &data, i));
    }
    let harness_cpu = cpu_seconds()? - cpu_before;

    let (cpu_before, started) = (cpu_seconds()?, Instant::now());
    let tasks = args.tasks.max(1);
    let per_task = args.records.div_ceil(tasks);
    let mut feeders = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let range = (t * per_task).min(args.records)..((t + 1) * per_task).min(args.records);
        feeders.spawn(feed(producer.clone(), stream.clone(), data.clone(), range));
    }
    let mut failed = 0;
    while let Some(done) = feeders.join_next().await {
        failed += done?.map_err(|e| e.to_string())?;
    }
    producer.flush_and_wait().await;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds()? - cpu_before;
    let stats = producer.stats();
    producer.shutdown().await;

    let n = args.records as f64;
    println!(
        "records={} size={}B aggregation={} ordered={} shards={} allocator={ALLOCATOR_NAME} runtime={} endpoint={}",
        args.records,
        args.size,
        args.aggregation,
        args.ordered,
        args.shards,
        if args.single_thread {
            "single-thread"
        } else {
            "multi-thread"
        },
        if args.null {
            "null".to_owned()
        } else if args.fast {
            format!("fast:{}ms", args.latency_ms)
        } else {
            endpoint.to_owned()
        }
    );
    println!(
        "elapsed_s={elapsed:.2} user_records_per_s={:.0}",
        n / elapsed
    );
    println!(
        "kinesis_records={} kinesis_records_per_s={:.0} put_records_calls={} failed={}",
        stats.kinesis_records_put,
        stats.kinesis_records_put as f64 / elapsed,
        stats.put_records_calls,
        failed
    );
    println!(
        "cpu_s={cpu:.2} cpu_s_per_million_user_records={:.3} harness_only={:.3} producer_only={:.3} peak_rss_mib={:.1}",
        cpu / n * 1e6,
        harness_cpu / n * 1e6,
        (cpu - harness_cpu) / n * 1e6,
        peak_rss_kib()? as f64 / 1024.0
    );
    Ok(())
}

/// Record number `i`: a distinct 16-character key (`i` in hex), the shared stream name and
/// payload. The key is written by hand: `format!` would cost the harness a third more.
fn make_record(stream: &Arc<str>, data: &Bytes, i: usize) -> UserRecord {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = i as u64;
    let mut key = String::with_capacity(16);
    for shift in (0..16).rev() {
        key.push(char::from(HEX[((n >> (4 * shift)) & 0xf) as usize]));
    }
    UserRecord::new(stream.clone(), key, data.clone())
}

/// Puts the records numbered `range` and awaits their results, in order, in another task, in
/// chunks (one channel message per chunk), so this loop only feeds the producer. Returns how
/// many failed.
async fn feed(
    producer: Producer,
    stream: Arc<str>,
    data: Bytes,
    range: std::ops::Range<usize>,
) -> Result<u64, Box<dyn Error + Send + Sync>> {
    const CHUNK: usize = 1024;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<kpl::PutFuture>>(64);
    let waiter = tokio::spawn(async move {
        let mut failed = 0;
        while let Some(chunk) = rx.recv().await {
            for f in chunk {
                if f.await.is_err() {
                    failed += 1;
                }
            }
        }
        failed
    });
    let mut chunk = Vec::with_capacity(CHUNK);
    for i in range {
        chunk.push(producer.put(make_record(&stream, &data, i)).await?);
        if chunk.len() == CHUNK {
            tx.send(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK)))
                .await?;
        }
    }
    tx.send(chunk).await?;
    drop(tx);
    Ok(waiter.await?)
}

/// A minimal Kinesis for the bench: ListShards answers `shards` even shards; PutRecords answers
/// success for every entry on the shard owning its hash key. Nothing is stored.
async fn serve_fast(shards: u32, latency_ms: u64) -> Result<(), Box<dyn Error>> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    println!("http://{}", listener.local_addr()?);
    let ranges: Arc<Vec<(u128, u128)>> = Arc::new(even_ranges(shards));
    let sequence = Arc::new(AtomicU64::new(1));
    loop {
        let (socket, _) = listener.accept().await?;
        let (ranges, sequence) = (ranges.clone(), sequence.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (ranges, sequence) = (ranges.clone(), sequence.clone());
                async move {
                    let target = req
                        .headers()
                        .get("x-amz-target")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let body = req.into_body().collect().await?.to_bytes();
                    if latency_ms > 0 && target.ends_with(".PutRecords") {
                        tokio::time::sleep(Duration::from_millis(latency_ms)).await;
                    }
                    let answer = if target.ends_with(".ListShards") {
                        let shards: Vec<Value> = ranges
                            .iter()
                            .enumerate()
                            .map(|(i, (s, e))| {
                                json!({"ShardId": format!("shardId-{i:012}"),
                                       "HashKeyRange": {"StartingHashKey": s.to_string(), "EndingHashKey": e.to_string()},
                                       "SequenceNumberRange": {"StartingSequenceNumber": "1"}})
                            })
                            .collect();
                        json!({"Shards": shards})
                    } else {
                        let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        let records: Vec<Value> = request["Records"]
                            .as_array()
                            .map(|entries| {
                                entries
                                    .iter()
                                    .map(|e| {
                                        let key = HashKey::for_record(
                                            e["PartitionKey"].as_str().unwrap_or_default(),
                                            e["ExplicitHashKey"].as_str(),
                                        )
                                        .unwrap_or(HashKey(0));
                                        let shard = shard_of(&ranges, key);
                                        let seq = sequence.fetch_add(1, Ordering::Relaxed);
                                        json!({"ShardId": format!("shardId-{shard:012}"), "SequenceNumber": seq.to_string()})
                                    })
                                    .collect()
                            })
                            .unwrap_or_default();
                        json!({"FailedRecordCount": 0, "Records": records})
                    };
                    Ok::<_, hyper::Error>(
                        Response::builder()
                            .header("content-type", "application/x-amz-json-1.1")
                            .body(Full::new(Bytes::from(answer.to_string())))
                            .unwrap_or_default(),
                    )
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(socket), service)
                .await;
        });
    }
}

/// A Kinesis without I/O for `--null`: the in-memory Kinesis lists the shards; PutRecords answers
/// every entry as stored on the shard owning its hash key, storing nothing.
#[derive(Debug)]
struct NullKinesis {
    listing: kinesis_api::memory::MemoryKinesis,
    ranges: Vec<(u128, u128)>,
    sequence: AtomicU64,
}

impl NullKinesis {
    fn new(shards: u32) -> Self {
        let listing = kinesis_api::memory::MemoryKinesis::with_seed(1);
        listing.create_stream("bench", shards);
        NullKinesis {
            listing,
            ranges: even_ranges(shards),
            sequence: AtomicU64::new(1),
        }
    }
}

/// `shards` ranges splitting the hash-key space evenly, as a new stream's shards do.
fn even_ranges(shards: u32) -> Vec<(u128, u128)> {
    let n = u128::from(shards);
    let width = u128::MAX / n;
    (0..n)
        .map(|i| {
            let end = if i + 1 == n {
                u128::MAX
            } else {
                (i + 1) * width - 1
            };
            (i * width, end)
        })
        .collect()
}

/// The index of the range owning `key`.
fn shard_of(ranges: &[(u128, u128)], key: HashKey) -> usize {
    ranges
        .partition_point(|(_, end)| *end < key.0)
        .min(ranges.len() - 1)
}

#[async_trait::async_trait]
impl kinesis_api::Kinesis for NullKinesis {
    async fn describe_stream_summary(
        &self,
        stream: &kinesis_api::StreamRef,
    ) -> Result<kinesis_api::StreamSummary, kinesis_api::AwsError> {
        self.listing.describe_stream_summary(stream).await
    }

    async fn list_shards(
        &self,
        stream: &kinesis_api::StreamRef,
        filter: kinesis_api::ShardFilter,
    ) -> Result<Vec<kinesis_api::Shard>, kinesis_api::AwsError> {
        self.listing.list_shards(stream, filter).await
    }

    async fn get_shard_iterator(
        &self,
        stream: &kinesis_api::StreamRef,
        shard_id: &str,
        start: &kinesis_api::IteratorStart,
    ) -> Result<String, kinesis_api::AwsError> {
        self.listing
            .get_shard_iterator(stream, shard_id, start)
            .await
    }

    async fn get_records(
        &self,
        iterator: &str,
        limit: i32,
    ) -> Result<kinesis_api::RecordsPage, kinesis_api::AwsError> {
        self.listing.get_records(iterator, limit).await
    }

    async fn put_records(
        &self,
        _stream: &kinesis_api::StreamRef,
        entries: Vec<kinesis_api::PutEntry>,
    ) -> Result<Vec<kinesis_api::PutResult>, kinesis_api::AwsError> {
        Ok(entries
            .iter()
            .map(|e| {
                let key = HashKey::for_record(&e.partition_key, e.explicit_hash_key.as_deref())
                    .unwrap_or(HashKey(0));
                let shard = shard_of(&self.ranges, key);
                let seq = self.sequence.fetch_add(1, Ordering::Relaxed);
                kinesis_api::PutResult::Stored {
                    shard_id: format!("shardId-{shard:012}"),
                    sequence_number: seq.to_string(),
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_sixteen_hex_digits() {
        let (stream, data) = (Arc::from("s"), Bytes::new());
        for i in [0, 1, 0xabc, usize::MAX] {
            assert_eq!(
                make_record(&stream, &data, i).partition_key(),
                format!("{i:016x}")
            );
        }
    }
}
