#!/usr/bin/env bash
# The real Java KCL for the interop tests: installs the KCL 3.1.3 jars and the AWS SDK v2 jars
# (from PyPI's kclpy-ext 3.1.3 wheel, which ships them) into .local-aws/, compiles
# integration-tests/java/InteropConsumer.java against them with javac (Java 17), and prints the
# classpath on stdout. Idempotent: a second run only recompiles when the source changed.
#
#   scripts/java-kcl.sh            install if needed, print the classpath
#
# Settings (environment): LOCAL_AWS_DIR (default <repo>/.local-aws).
set -euo pipefail

KCLPY_EXT_VERSION=3.1.3

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${LOCAL_AWS_DIR:-$ROOT/.local-aws}/java-kcl-$KCLPY_EXT_VERSION
SOURCE=$ROOT/integration-tests/java/InteropConsumer.java

log() { echo "java-kcl: $*" >&2; }
die() { log "error: $*"; exit 1; }

command -v java >/dev/null || die "java not found: install Java 17+ (openjdk-17-jdk-headless)"
command -v javac >/dev/null || die "javac not found: install a JDK 17+ (openjdk-17-jdk-headless)"
command -v python3 >/dev/null || die "python3 not found (pip downloads the KCL jars from PyPI)"

if [[ ! -f $DIR/jars/.complete ]]; then
  log "installing the Java KCL $KCLPY_EXT_VERSION jars from PyPI kclpy-ext"
  rm -rf "$DIR" && mkdir -p "$DIR/jars"
  python3 -m pip download --quiet --no-deps --dest "$DIR/wheel" "kclpy-ext==$KCLPY_EXT_VERSION" >&2 \
    || die "pip could not download kclpy-ext==$KCLPY_EXT_VERSION (is PyPI reachable?)"
  python3 - "$DIR" <<'EOF'
import glob, os, sys, zipfile
target = sys.argv[1]
(wheel,) = glob.glob(os.path.join(target, "wheel", "*.whl"))
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.endswith(".jar"):
            with open(os.path.join(target, "jars", os.path.basename(name)), "wb") as f:
                f.write(z.read(name))
EOF
  ls "$DIR/jars"/amazon-kinesis-client-"$KCLPY_EXT_VERSION".jar >/dev/null \
    || die "the wheel has no amazon-kinesis-client-$KCLPY_EXT_VERSION.jar"
  rm -rf "$DIR/wheel"
  touch "$DIR/jars/.complete"
fi

CLASSPATH=$(find "$DIR/jars" -name '*.jar' | sort | tr '\n' ':')
STAMP=$DIR/classes/.source-sha256
SUM=$(sha256sum "$SOURCE" | cut -d' ' -f1)
if [[ ! -f $STAMP || $(cat "$STAMP") != "$SUM" ]]; then
  log "compiling $(basename "$SOURCE")"
  rm -rf "$DIR/classes" && mkdir -p "$DIR/classes"
  javac -nowarn -d "$DIR/classes" -cp "$CLASSPATH" "$SOURCE" >&2
  echo "$SUM" >"$STAMP"
fi
echo "$DIR/classes:$CLASSPATH"
