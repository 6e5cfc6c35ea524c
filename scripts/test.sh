#!/usr/bin/env bash
# All tests: unit, property, vector, doc and integration tests, against local AWS.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$ROOT/scripts/with-local-aws.sh" bash -c 'cargo test --workspace --no-fail-fast "$@"' test "$@"
