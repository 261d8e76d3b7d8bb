#!/usr/bin/env bash
# The sidecar's footprint (README "The binary", BENCHMARKS.md section 9): the size of the static
# binaries of `make build-static`, and the idle RSS of the sidecar in `--schedule` mode against
# a local S3 server (scripts/s3-server.sh): `VmRSS` of our process (not its rclone children),
# read from /proc one second after it logged its next run, RUNS times; median, min and max.
# Usage: scripts/footprint.sh [RUNS]      (needs make build-static and make tools first)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
sidecar=target/x86_64-unknown-linux-musl/release/volume-syncing-operator
operator=target/x86_64-unknown-linux-musl/release/volume-syncing-operator-webhook
export RCLONE_BINARY=${RCLONE_BINARY:-$PWD/tools/bin/rclone}
for bin in "$sidecar" "$operator" "$RCLONE_BINARY"; do
  [ -x "$bin" ] || { echo "footprint: $bin is missing: run make build-static and make tools" >&2; exit 1; }
done
size() { stat -c %s "$1"; }
mib() { awk -v b="$1" 'BEGIN { printf "%.2f MiB", b / 1048576 }'; }
echo "sidecar binary: $(mib "$(size "$sidecar")") ($(size "$sidecar") bytes)"
echo "operator binary: $(mib "$(size "$operator")") ($(size "$operator") bytes)"

state=$(mktemp -d "${TMPDIR:-/tmp}/vso-footprint.XXXXXX")
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  scripts/s3-server.sh stop "$state" 2>/dev/null || true
  rm -rf "$state"
}
trap cleanup EXIT
scripts/s3-server.sh start "$state"
eval "$(scripts/s3-server.sh env "$state")"
mkdir -p "$state/data/dir"
for i in $(seq 1 20); do echo "file $i" > "$state/data/dir/f$i"; done
samples=()
for run in $(seq 1 "$runs"); do
  log="$state/run$run.log"
  "$sidecar" sync-to-remote -s "$state/data" -d "demo/footprint-$run" --schedule '@every 1h' \
    --pid-path "$state/pid-$run" >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 1 600); do
    grep -q 'next_run=' "$log" 2>/dev/null && break
    sleep 0.1
  done
  grep -q 'next_run=' "$log" || { echo "footprint: run $run logged no next run:" >&2; cat "$log" >&2; exit 1; }
  sleep 1
  kib=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
  samples+=("$kib")
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  pid=
done
printf '%s\n' "${samples[@]}" | sort -n | awk '
  { v[NR] = $1 }
  END {
    median = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "sidecar idle VmRSS in --schedule mode: %.2f MiB (min %.2f, max %.2f, n=%d)\n",
      median / 1024, v[1] / 1024, v[NR] / 1024, NR
  }'
