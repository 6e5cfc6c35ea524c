#!/usr/bin/env bash
# The demo: starts local AWS, produces user records with kpl into a fresh stream, then reads them
# back with GetRecords and deaggregates them.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$ROOT/scripts/with-local-aws.sh" cargo run --quiet -p kinesis-examples --bin produce
