#!/usr/bin/env bash
# `make demo`: upload examples/data to a local S3 server, restore it into a fresh directory,
# show that both trees are equal, show a safety valve refusing a wipe, stop the server.
# The last line is "demo ok: ..." when everything behaved as it should; anything else exits
# non-zero.
set -euo pipefail
bin=${VSO_BINARY:-target/debug/volume-syncing-operator}
# VSO_DEMO_STATE: another state directory (tests/it/front_door.rs runs the demo in a temp dir).
state=${VSO_DEMO_STATE:-.demo}
rm -rf "$state"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
note() { printf '   %s\n' "$@"; }

# The server is a child of this script; the trap stops it however the script ends.
trap 'scripts/s3-server.sh stop "$state"; echo "(local S3 server stopped)"' EXIT
step "start a local S3 server"
scripts/s3-server.sh start "$state"
eval "$(scripts/s3-server.sh env "$state")"
note "rclone serve s3 on $REMOTE_ENDPOINT (pid $(cat "$state/pid")), storing its objects" \
  "as plain files under $state/s3; it is stopped when this demo ends (or: make example-stop)." \
  "The REMOTE_* variables below are all the configuration the binary needs:"
env | grep '^REMOTE_' | sort | sed 's/^/     /'

step "upload examples/data to remote:demo/data"
note "The ~0.75 s pause before the upload is the lease: the uploader writes a lease object," \
  "waits for it to settle and reads it back, so that two writers never upload to the same path." \
  "Run again with nothing changed, the upload writes nothing, so it takes no lease: no pause."
"$bin" sync-to-remote -s examples/data -d demo/data

step "restore remote:demo/data into $state/restored"
"$bin" remote-to-local-sync -s demo/data -d "$state/restored"

step "compare the trees"
diff -r examples/data "$state/restored"
files=$(find examples/data -type f | wc -l)
echo "examples/data and $state/restored are identical ($files files)"

step "the point of this step: a safety valve refusing a wipe"
note "Uploading an EMPTY directory to demo/data would delete every file there." \
  "The binary must refuse it: expect an ERROR line saying 'refused' (rule empty-source)" \
  "and exit code 3. That is the success of this step."
mkdir -p "$state/empty"
set +e
"$bin" sync-to-remote -s "$state/empty" -d demo/data
code=$?
set -e
user_objects=$(find "$state/s3/demo/data" -type f ! -name '.volume-syncing-operator.*' | wc -l)
internal=$(find "$state/s3/demo/data" -type f -name '.volume-syncing-operator.*' -printf '%f ' )
echo "exit code $code (3 = refused by a safety valve, as expected)"
echo "the remote still holds the $user_objects files of examples/data" \
  "(plus the tool's own objects: ${internal% })"
if [ "$code" -ne 3 ] || [ "$user_objects" -ne "$files" ]; then
  echo "demo FAILED: expected exit code 3 and $files files kept on the remote" >&2
  exit 1
fi

trap - EXIT
scripts/s3-server.sh stop "$state"
echo "(local S3 server stopped; its data stays in $state/s3 until the next make demo or make clean)"
echo
echo "demo ok: uploaded, restored byte-identical, and a wipe refused as it should be"
