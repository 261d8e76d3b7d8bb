#!/usr/bin/env bash
# `make demo`: upload examples/data to a local S3 server, restore it into a fresh directory,
# show that both trees are equal, stop the server.
set -euo pipefail
bin=${VSO_BINARY:-target/debug/volume-syncing-operator}
state=.demo
rm -rf "$state"
trap 'scripts/s3-server.sh stop "$state"' EXIT
scripts/s3-server.sh start "$state"
eval "$(scripts/s3-server.sh env "$state")"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
step "upload examples/data to remote:demo/data"
"$bin" sync-to-remote -s examples/data -d demo/data
step "restore remote:demo/data into $state/restored"
"$bin" remote-to-local-sync -s demo/data -d "$state/restored"
step "compare the trees"
diff -r examples/data "$state/restored"
echo "examples/data and $state/restored are identical ($(find examples/data -type f | wc -l) files)"
step "a safety valve at work: uploading an empty directory is refused (exit 3)"
mkdir -p "$state/empty"
set +e
"$bin" sync-to-remote -s "$state/empty" -d demo/data
code=$?
set -e
echo "exit code $code; the remote still holds $(find "$state/s3/demo/data" -type f | wc -l) files"
[ "$code" -eq 3 ]
