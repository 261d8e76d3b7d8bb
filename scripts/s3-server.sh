#!/usr/bin/env bash
# A local S3 server for the demo and the examples: `rclone serve s3` on 127.0.0.1, a free port.
# Usage: scripts/s3-server.sh start STATE_DIR   start (idempotent); prints nothing
#        scripts/s3-server.sh env STATE_DIR     prints the REMOTE_* exports for it
#        scripts/s3-server.sh stop STATE_DIR    stop it
set -euo pipefail
cmd=${1:?usage: s3-server.sh start|env|stop STATE_DIR}
state=${2:?usage: s3-server.sh start|env|stop STATE_DIR}
rclone=${RCLONE_BINARY:-rclone}
access_key=DEMOACCESSKEY0001
secret_key=demo-secret-key-0123456789

running() { [ -f "$state/pid" ] && kill -0 "$(cat "$state/pid")" 2>/dev/null; }

case "$cmd" in
start)
  running && exit 0
  mkdir -p "$state/s3/demo"
  : > "$state/server.log"
  "$rclone" serve s3 --config /dev/null --addr 127.0.0.1:0 --auth-key "$access_key,$secret_key" \
    "$state/s3" >"$state/server.log" 2>&1 &
  echo $! > "$state/pid"
  for _ in $(seq 1 100); do
    port=$(sed -n 's#.*Starting s3 server on \[http://127.0.0.1:\([0-9]*\)/\].*#\1#p' "$state/server.log")
    if [ -n "$port" ]; then
      echo "$port" > "$state/port"
      echo "local S3 server (rclone serve s3) on http://127.0.0.1:$port, data in $state/s3" >&2
      exit 0
    fi
    sleep 0.1
  done
  echo "the S3 server did not start:" >&2; cat "$state/server.log" >&2; exit 1
  ;;
env)
  cat <<ENV
export REMOTE_TYPE=s3
export REMOTE_PROVIDER=Rclone
export REMOTE_ACCESS_KEY_ID=$access_key
export REMOTE_SECRET_ACCESS_KEY=$secret_key
export REMOTE_ENDPOINT=http://127.0.0.1:$(cat "$state/port")
ENV
  ;;
stop)
  if running; then kill "$(cat "$state/pid")"; fi
  rm -f "$state/pid" "$state/port"
  ;;
*) echo "unknown command $cmd" >&2; exit 2 ;;
esac
