#!/usr/bin/env bash
# Producer benchmark matrix, all in one run so the ratios compare: the fast child-process
# endpoint (the producer's own ceiling) with the system allocator and with mimalloc, on the
# multi-thread runtime and on one thread, and kinesis-mock (started by with-local-aws.sh).
# Prints one block per case.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
cargo build --release --quiet -p kinesis-examples --bin kpl_bench
cp target/release/kpl_bench target/release/kpl_bench_system
cargo build --release --quiet -p kinesis-examples --features mimalloc --bin kpl_bench
cp target/release/kpl_bench target/release/kpl_bench_mimalloc
for alloc in system mimalloc; do
    for runtime in "" --single-thread; do
    target/release/kpl_bench_$alloc --fast $runtime --records 1000000 --size 100
    target/release/kpl_bench_$alloc --fast $runtime --records 200000 --size 1024
  done
  target/release/kpl_bench_$alloc --fast --tasks 4 --records 1000000 --size 100
done
scripts/with-local-aws.sh bash -c '
  target/release/kpl_bench_system --records 100000 --size 100 --shards 4
  target/release/kpl_bench_system --records 20000 --size 1024 --shards 4'
