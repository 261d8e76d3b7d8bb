#!/usr/bin/env bash
# Prints, for each failing test in a saved `cargo test` output, where it panicked and the start
# of its message, so the last lines of a failed `make test` name the cause (a CI page that shows
# only the head and the tail of the output otherwise cuts the "failures:" sections).
# Usage: scripts/test-failures.sh FILE   (prints nothing when FILE has no failure)
set -euo pipefail
file=${1:?usage: scripts/test-failures.sh FILE}
[ -f "$file" ] || { echo "test-failures: $file does not exist" >&2; exit 2; }
awk '
  /^---- .* stdout ----$/ { name = $2; grabbing = 0; next }
  /^failures:$/ && name != "" { grabbing = 0 }
  name != "" && /panicked at / {
    print "== " name ": " $0; grabbing = 40; next
  }
  grabbing > 0 {
    if ($0 ~ /^note: run with `RUST_BACKTRACE/ || $0 ~ /^---- / || $0 == "") { grabbing = 0; next }
    print "   " $0; grabbing--
  }
' "$file"
