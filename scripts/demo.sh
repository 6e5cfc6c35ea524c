#!/usr/bin/env bash
# The demo: starts local AWS, then a kcl consumer worker and a kpl producer on a fresh stream: the
# producer puts user records, the worker consumes and checkpoints them, then shuts down gracefully.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$ROOT/scripts/with-local-aws.sh" cargo run --quiet -p kinesis-examples --bin demo
