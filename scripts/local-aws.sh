#!/usr/bin/env bash
# Local AWS for development and tests: kinesis-mock (npm kinesis-local) and DynamoDB Local (the jar
# inside npm amplify-dynamodb-simulator), installed into .local-aws/ of this repo and started on
# loopback ports.
#
#   scripts/local-aws.sh up       install if needed, start both, wait for health, print exports
#   scripts/local-aws.sh env      print the export lines (for: eval "$(scripts/local-aws.sh env)")
#   scripts/local-aws.sh status   say what runs
#   scripts/local-aws.sh down     stop what `up` started (only those PIDs)
#
# `up` prints progress on stderr and only the export lines on stdout, so
#   eval "$(scripts/local-aws.sh up)"
# starts everything and points this shell at it.
#
# Settings (environment):
#   LOCAL_AWS_KINESIS_PORT   plain HTTP port of kinesis-mock   (default 4568)
#   LOCAL_AWS_DYNAMODB_PORT  port of DynamoDB Local            (default 8000)
#   LOCAL_AWS_TIMEOUT        seconds to wait for health        (default 90)
#   LOCAL_AWS_DIR            install and state folder          (default <repo>/.local-aws)
#   AWS_ENDPOINT_URL         if set (say, your own LocalStack at http://localhost:4566), nothing is
#                            started and that endpoint is used for both services.
set -euo pipefail

KINESIS_LOCAL_VERSION=0.6.2
DYNAMODB_SIMULATOR_VERSION=2.9.30

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${LOCAL_AWS_DIR:-$ROOT/.local-aws}
KINESIS_PORT=${LOCAL_AWS_KINESIS_PORT:-4568}
KINESIS_TLS_PORT=${LOCAL_AWS_KINESIS_TLS_PORT:-$((KINESIS_PORT + 1))}
DYNAMODB_PORT=${LOCAL_AWS_DYNAMODB_PORT:-8000}
TIMEOUT=${LOCAL_AWS_TIMEOUT:-90}
REGION=${AWS_REGION:-${AWS_DEFAULT_REGION:-us-east-1}}

KINESIS_HOME=$DIR/kinesis-local-$KINESIS_LOCAL_VERSION
DYNAMODB_HOME=$DIR/dynamodb-local-$DYNAMODB_SIMULATOR_VERSION

log() { echo "local-aws: $*" >&2; }
die() { log "error: $*"; exit 1; }

print_env() {
  if [[ -n "${AWS_ENDPOINT_URL:-}" ]]; then
    echo "export AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL"
  else
    echo "export AWS_ENDPOINT_URL_KINESIS=http://127.0.0.1:$KINESIS_PORT"
    echo "export AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:$DYNAMODB_PORT"
  fi
  echo "export AWS_REGION=$REGION"
  echo "export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-local}"
  echo "export AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-local}"
  echo "export AWS_EC2_METADATA_DISABLED=true"
}

# npm pack a package into a temporary folder and untar part of it into $3.
npm_unpack() {
  local spec=$1 member=$2 dest=$3 tmp
  tmp=$(mktemp -d)
  command -v npm >/dev/null || die "npm is needed to install $spec (apt-get install nodejs npm)"
  (cd "$tmp" && npm pack --silent "$spec" >/dev/null 2>"$tmp/npm.err") ||
    { cat "$tmp/npm.err" >&2; rm -rf "$tmp"; die "npm pack $spec failed"; }
  mkdir -p "$tmp/x"
  tar xzf "$tmp"/*.tgz -C "$tmp/x" "$member"
  rm -rf "$dest"
  mv "$tmp/x/$member" "$dest"
  rm -rf "$tmp"
}

install() {
  mkdir -p "$DIR"
  if [[ ! -f $KINESIS_HOME/main.js ]]; then
    log "installing kinesis-local@$KINESIS_LOCAL_VERSION"
    npm_unpack "kinesis-local@$KINESIS_LOCAL_VERSION" package "$KINESIS_HOME"
  fi
  if [[ ! -f $DYNAMODB_HOME/DynamoDBLocal.jar ]]; then
    log "installing DynamoDB Local from amplify-dynamodb-simulator@$DYNAMODB_SIMULATOR_VERSION"
    npm_unpack "amplify-dynamodb-simulator@$DYNAMODB_SIMULATOR_VERSION" package/emulator "$DYNAMODB_HOME"
  fi
  command -v node >/dev/null || die "node is needed to run kinesis-mock"
  command -v java >/dev/null || die "java (17 or newer) is needed to run DynamoDB Local"
}

# pid_of NAME: the recorded PID if that process still runs what we started.
pid_of() {
  local file=$DIR/$1.pid pid
  [[ -f $file ]] || return 1
  pid=$(<"$file")
  [[ -n $pid && -r /proc/$pid/cmdline ]] || return 1
  case $1 in
    kinesis) grep -qa "main.js" "/proc/$pid/cmdline" ;;
    dynamodb) grep -qa "DynamoDBLocal.jar" "/proc/$pid/cmdline" ;;
  esac || return 1
  echo "$pid"
}

kinesis_healthy() { curl -fsS -m 2 "http://127.0.0.1:$KINESIS_PORT/healthcheck" >/dev/null 2>&1; }

dynamodb_healthy() {
  curl -fsS -m 2 -X POST "http://127.0.0.1:$DYNAMODB_PORT/" \
    -H 'Content-Type: application/x-amz-json-1.0' \
    -H 'X-Amz-Target: DynamoDB_20120810.ListTables' \
    -H "Authorization: AWS4-HMAC-SHA256 Credential=local/20260101/$REGION/dynamodb/aws4_request, SignedHeaders=host, Signature=0" \
    -d '{}' >/dev/null 2>&1
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_kinesis() {
  if pid_of kinesis >/dev/null && kinesis_healthy; then log "kinesis-mock already running on :$KINESIS_PORT"; return; fi
  port_busy "$KINESIS_PORT" && die "port $KINESIS_PORT is taken by another process: set LOCAL_AWS_KINESIS_PORT"
  (
    cd "$KINESIS_HOME"
    export KINESIS_MOCK_PLAIN_PORT=$KINESIS_PORT KINESIS_MOCK_TLS_PORT=$KINESIS_TLS_PORT
    export AWS_REGION=$REGION LOG_LEVEL=${LOCAL_AWS_KINESIS_LOG_LEVEL:-WARN}
    for op in CREATE_STREAM DELETE_STREAM REGISTER_STREAM_CONSUMER DEREGISTER_STREAM_CONSUMER \
      START_STREAM_ENCRYPTION STOP_STREAM_ENCRYPTION MERGE_SHARDS SPLIT_SHARD UPDATE_SHARD_COUNT \
      UPDATE_STREAM_MODE; do
      export "${op}_DURATION=0ms"
    done
    export SHARD_LIMIT=${LOCAL_AWS_SHARD_LIMIT:-1000}
    nohup node main.js >"$DIR/kinesis.log" 2>&1 </dev/null &
    echo $! >"$DIR/kinesis.pid"
  )
}

start_dynamodb() {
  if pid_of dynamodb >/dev/null && dynamodb_healthy; then log "DynamoDB Local already running on :$DYNAMODB_PORT"; return; fi
  port_busy "$DYNAMODB_PORT" && die "port $DYNAMODB_PORT is taken by another process: set LOCAL_AWS_DYNAMODB_PORT"
  (
    cd "$DYNAMODB_HOME"
    nohup java -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto \
      -Djava.library.path=./DynamoDBLocal_lib -jar DynamoDBLocal.jar \
      -inMemory -sharedDb -disableTelemetry -port "$DYNAMODB_PORT" \
      >"$DIR/dynamodb.log" 2>&1 </dev/null &
    echo $! >"$DIR/dynamodb.pid"
  )
}

wait_healthy() {
  local name=$1 check=$2 logfile=$3 deadline=$((SECONDS + TIMEOUT))
  until $check; do
    if ! pid_of "$name" >/dev/null; then
      tail -n 20 "$logfile" >&2 || true
      die "$name exited during start-up; see $logfile"
    fi
    if ((SECONDS >= deadline)); then
      tail -n 20 "$logfile" >&2 || true
      die "$name not healthy after ${TIMEOUT}s; see $logfile"
    fi
    sleep 0.2
  done
}

stop_one() {
  local name=$1 pid
  if pid=$(pid_of "$name"); then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
      [[ -d /proc/$pid ]] || break
      sleep 0.1
    done
    # kinesis-mock can ignore SIGTERM.
    [[ -d /proc/$pid ]] && kill -KILL "$pid" 2>/dev/null || true
    log "stopped $name (pid $pid)"
  fi
  rm -f "$DIR/$name.pid"
}

cmd=${1:-}
case $cmd in
  up)
    if [[ -n "${AWS_ENDPOINT_URL:-}" ]]; then
      log "AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL is set: using it, starting nothing"
      print_env
      exit 0
    fi
    started=$SECONDS
    install
    start_kinesis
    start_dynamodb
    wait_healthy kinesis kinesis_healthy "$DIR/kinesis.log"
    wait_healthy dynamodb dynamodb_healthy "$DIR/dynamodb.log"
    log "kinesis-mock on :$KINESIS_PORT, DynamoDB Local on :$DYNAMODB_PORT (up in $((SECONDS - started)) s)"
    print_env
    ;;
  env) print_env ;;
  status)
    if [[ -n "${AWS_ENDPOINT_URL:-}" ]]; then echo "using AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL"; exit 0; fi
    rc=0
    if pid=$(pid_of kinesis) && kinesis_healthy; then echo "kinesis-mock: running (pid $pid, :$KINESIS_PORT)"; else echo "kinesis-mock: not running"; rc=1; fi
    if pid=$(pid_of dynamodb) && dynamodb_healthy; then echo "dynamodb-local: running (pid $pid, :$DYNAMODB_PORT)"; else echo "dynamodb-local: not running"; rc=1; fi
    exit $rc
    ;;
  down)
    stop_one kinesis
    stop_one dynamodb
    ;;
  *)
    echo "usage: $0 up|env|status|down" >&2
    exit 2
    ;;
esac
