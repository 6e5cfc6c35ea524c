#!/usr/bin/env bash
# Producer benchmark matrix, all in one run so the ratios compare. Against the fast child-process
# endpoint (the producer's own ceiling; the server's CPU is not counted), multi-thread runtime,
# 100 B records with aggregation:
#   - record count: 100k, 1M and 5M records on 64 shards (memory should not grow with it);
#   - shard count: 4, 64 and 512 shards at 1M records (cost per record should not grow);
#   - ordered mode off and on for each of those, and at a 20 ms round trip with and without
#     aggregation (where its one call per shard at a time costs throughput);
# then 1 KiB records, the one-thread runtime and mimalloc for comparison, and kinesis-mock
# (started by with-local-aws.sh) as a real endpoint. One line per case: CPU-seconds per million
# user records (the producer's share, the harness subtracted, and the total) and peak RSS.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
cargo build --release --quiet -p kinesis-examples --bin kpl_bench
cp target/release/kpl_bench target/release/kpl_bench_system
cargo build --release --quiet -p kinesis-examples --features mimalloc --bin kpl_bench
cp target/release/kpl_bench target/release/kpl_bench_mimalloc

summary() {
  # One line per case (a case's output ends with its cpu_s= line).
  awk '
    /^(records|elapsed_s|kinesis_records|cpu_s)=/ { for (i = 1; i <= NF; i++) { split($i, kv, "="); c[kv[1]] = kv[2] } }
    /^cpu_s=/ {
      printf "%-8s %-6s shards=%-4s ordered=%-5s aggregation=%-5s %-13s %-8s %s | cpu_s_per_M=%-6s producer_only=%-6s peak_rss_mib=%-6s user_records_per_s=%s failed=%s\n",
        c["records"], c["size"], c["shards"], c["ordered"], c["aggregation"], c["runtime"], c["allocator"], c["endpoint"],
        c["cpu_s_per_million_user_records"], c["producer_only"], c["peak_rss_mib"], c["user_records_per_s"], c["failed"]
    }'
}
run() { "$@" | summary; }

echo "== record count (64 shards) and shard count (1M records), 100 B, multi-thread, system allocator"
for ordered in "" --ordered; do
  for records in 100000 1000000 5000000; do
    run target/release/kpl_bench_system --fast $ordered --records $records --size 100 --shards 64
  done
  for shards in 4 512; do
    run target/release/kpl_bench_system --fast $ordered --records 1000000 --size 100 --shards $shards
  done
done
echo "== the pipeline alone: an in-process Kinesis without I/O (no SDK, HTTP or signing), 1M x 100 B, 64 shards"
run target/release/kpl_bench_system --null --records 1000000 --size 100 --shards 64
run target/release/kpl_bench_system --null --single-thread --records 1000000 --size 100 --shards 64
echo "== what ordered mode costs at a 20 ms round trip (64 shards, 200k records)"
for ordered in "" --ordered; do
  run target/release/kpl_bench_system --fast --latency-ms 20 $ordered --records 200000 --size 100 --shards 64
done
run target/release/kpl_bench_system --fast --latency-ms 20 --no-aggregation --records 200000 --size 100 --shards 64
run target/release/kpl_bench_system --fast --latency-ms 20 --no-aggregation --ordered --records 20000 --size 100 --shards 64
echo "== 1 KiB records at 4, 64 and 512 shards; one thread; mimalloc"
for shards in 4 64 512; do
  run target/release/kpl_bench_system --fast --records 200000 --size 1024 --shards $shards
done
run target/release/kpl_bench_system --fast --single-thread --records 1000000 --size 100 --shards 64
run target/release/kpl_bench_mimalloc --fast --records 1000000 --size 100 --shards 64
echo "== kinesis-mock"
scripts/with-local-aws.sh bash -c '
  target/release/kpl_bench_system --records 100000 --size 100 --shards 4
  target/release/kpl_bench_system --records 100000 --size 100 --shards 4 --ordered' | summary
