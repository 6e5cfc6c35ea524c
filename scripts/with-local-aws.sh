#!/usr/bin/env bash
# Runs a command with local AWS: starts the emulators (unless AWS_ENDPOINT_URL points at your own
# LocalStack, or they already run), exports the endpoints, runs the command, and stops what it
# started.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOCAL_AWS=$ROOT/scripts/local-aws.sh

started=0
if [[ -z "${AWS_ENDPOINT_URL:-}" ]] && ! "$LOCAL_AWS" status >/dev/null 2>&1; then
  started=1
  trap '"$LOCAL_AWS" down' EXIT
fi
exports=$("$LOCAL_AWS" up)
eval "$exports"
cd "$ROOT"
if ((started)); then
  "$@"
else
  exec "$@"
fi
