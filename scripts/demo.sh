#!/usr/bin/env bash
# The demo: starts local AWS, then aggregates, puts, reads back and deaggregates user records.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$ROOT/scripts/with-local-aws.sh" cargo run --quiet -p kinesis-examples --bin aggregate_roundtrip
