#!/usr/bin/env bash
# `make bench`: measures the release binary against plain rclone on a local S3 server
# (`rclone serve s3` on 127.0.0.1, a free port) and writes BENCHMARKS.md. Never part of
# `make test`; its exit status never depends on a target being met.
#
#   1. overhead: steady-state sync-to-remote of a tree vs. plain `rclone sync` with our flags
#   2. the empty-remote valve on a small and a big flat remote
#   3. idle and peak RSS in --schedule mode (/proc), rclone's peak separately
#   4. binary size (static build if `make build-static` exists) and --version start-up
#   5. watch mode: change-to-remote latency of one changed file in a big tree (default debounce
#      and --debounce 200ms), and that incremental sync's time vs. a full no-change sync
#   6. restore fidelity, before vs. after (when BENCH_BASELINE_BINARY names the binary from
#      before the metadata manifest; `make bench` builds it): the no-change sync of the tree of
#      section 1, and the restore of a remote of BENCH_RESTORE_FILES objects into a fresh directory
#   7. the lease: rclone calls of a one-shot upload, and the time taking and releasing it costs
#   8. at a real bucket's latency (scripts/delay-proxy.py in front of the server): restore,
#      upload and no-change upload of "many small", "few large" and a mixed tree; ours vs. plain
#      rclone defaults vs. hand-tuned rclone vs. tar|rclone rcat; a PNG plot (scripts/bench_latency.py,
#      which documents its own BENCH_LAT_* sizes)
#  11. the fixed costs of a run, before vs. after issue 28 (when BENCH_BEFORE28_BINARY names the
#      binary built from BENCH_BEFORE28_REV; `make bench` builds it): a one-shot no-change upload
#      on local S3 and at a delay, a scheduled run after the first, a dry run that prints one
#      line per file; each vs. plain rclone (scripts/bench_fixed_cost.py, which documents its
#      own BENCH_FC_* sizes)
#
# Sizes and repetitions (environment, defaults in brackets):
#   BENCH_FILES [2000]  BENCH_SMALL_REMOTE [10]  BENCH_BIG_REMOTE [20000]
#   BENCH_WATCH_FILES [20000] files in the watched tree  BENCH_WATCH_RUNS [10] changes per setting
#   BENCH_RUNS [10] timed runs per command   BENCH_WARMUP [2] warm-up runs per command
#   BENCH_PASS_RUNS [2] runs per hyperfine pass; passes alternate the order of two commands
#   BENCH_RSS_RUNS [5] scheduled processes for the memory figures
#   BENCH_OUT [BENCHMARKS.md]   BENCH_KEEP=1 keeps the work directory   BENCH_NOTE free text
#   VSO_BINARY [target/release/volume-syncing-operator]   RCLONE_BINARY [rclone]
#   BENCH_STATIC_BINARY: the static binary, if `make build-static` puts it somewhere unusual
#   BENCH_BASELINE_BINARY: the "before" binary of section 6 (unset: section 6 is skipped)
#   BENCH_RESTORE_FILES [20000] objects restored in section 6   BENCH_RESTORE_RUNS [5] runs each
#   BENCH_SECTIONS [all]: `8` or `11` runs that section alone and replaces it in BENCH_OUT;
#     `1-7` runs sections 1 to 7 (they need one another's data) and replaces BENCH_OUT up to
#     section 8, keeping sections 8 to 11 as they are
#   BENCH_BEFORE28_BINARY: the "before" binary of section 11 (unset: section 11 is skipped, and
#     BENCH_SECTIONS=11 fails)   BENCH_BEFORE28_REV [a830176]: the revision it was built from
#   BENCH_PYTHON [tools/venv/bin/python]: a Python with matplotlib, for section 8's plot
#   BENCH_QUICK=1: small sizes everywhere, a few runs (checks the harness; not a result)
# Needs hyperfine, python3, setpriv (util-linux) when run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

files=${BENCH_FILES:-2000}
small=${BENCH_SMALL_REMOTE:-10}
big=${BENCH_BIG_REMOTE:-20000}
runs=${BENCH_RUNS:-10}
warmup=${BENCH_WARMUP:-2}
rss_runs=${BENCH_RSS_RUNS:-5}
watch_files=${BENCH_WATCH_FILES:-20000}
watch_runs=${BENCH_WATCH_RUNS:-10}
out=${BENCH_OUT:-BENCHMARKS.md}
sections=${BENCH_SECTIONS:-all}
plot_python=${BENCH_PYTHON:-tools/venv/bin/python}
if [ "${BENCH_QUICK:-}" = 1 ]; then
  files=200 big=2000 runs=3 warmup=1 rss_runs=2 watch_files=500 watch_runs=3
  export BENCH_LAT_COUNTS=${BENCH_LAT_COUNTS:-100 400} BENCH_LAT_LARGE=${BENCH_LAT_LARGE:-2x8}
  export BENCH_LAT_MIXED=${BENCH_LAT_MIXED:-200} BENCH_LAT_RUNS=${BENCH_LAT_RUNS:-2}
  export BENCH_FC_RUNS=${BENCH_FC_RUNS:-3} BENCH_FC_FILES=${BENCH_FC_FILES:-200}
  export BENCH_FC_DRY_FILES=${BENCH_FC_DRY_FILES:-2000}
fi

die() { echo "bench: $*" >&2; exit 1; }
# The helpers in scripts/bench/ (a Python package: `python3 -m bench`, see its __init__.py).
bench_py() { PYTHONPATH=scripts${PYTHONPATH:+:$PYTHONPATH} python3 -m bench "$@"; }
step() { printf '\n\033[1m== bench: %s\033[0m\n' "$*" >&2; }

case $sections in all | 1-7 | 8 | 11) ;; *) echo "bench: BENCH_SECTIONS is all, 1-7, 8 or 11, not $sections" >&2; exit 2 ;; esac
tools=(python3 tar)
# Sections 8 and 11 time their commands themselves.
if [ "$sections" = all ]; then tools+=(hyperfine); fi
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null || die "$tool is needed (make bench installs hyperfine with apt-get)"
done
if [ "$sections" != 11 ]; then
  "$plot_python" -c 'import matplotlib' 2>/dev/null ||
    die "$plot_python has no matplotlib (make bench installs it into tools/venv; or set BENCH_PYTHON)"
fi
bin=${VSO_BINARY:-target/release/volume-syncing-operator}
[ -x "$bin" ] || die "$bin not found: run cargo build --release (make bench does)"
bin=$(realpath "$bin")
rclone=$(command -v "${RCLONE_BINARY:-rclone}") || die "rclone not found: run make tools"
rclone=$(realpath "$rclone")
export RCLONE_BINARY=$rclone
before28_rev=${BENCH_BEFORE28_REV:-a830176}
before28=${BENCH_BEFORE28_BINARY:-}
if [ -n "$before28" ]; then
  [ -x "$before28" ] || die "BENCH_BEFORE28_BINARY=$before28 is not an executable file"
  before28=$(realpath "$before28")
elif [ "$sections" = 11 ]; then
  die "BENCH_SECTIONS=11 needs BENCH_BEFORE28_BINARY, the release binary built from $before28_rev
  (BENCH_BEFORE28_REV). make bench builds it; by hand:
    mkdir -p target/bench-before-28/src
    git archive $before28_rev | tar -x -C target/bench-before-28/src
    (cd target/bench-before-28/src && CARGO_TARGET_DIR=\$PWD/../target cargo build --release --locked)
  then: BENCH_SECTIONS=11 BENCH_BEFORE28_BINARY=target/bench-before-28/target/release/volume-syncing-operator scripts/bench.sh"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/vso-bench.XXXXXX")
case $work in *[[:space:]]*) die "the work directory $work contains white space" ;; esac
chmod 755 "$work"
results=$work/results
mkdir -p "$results"
cleanup() {
  scripts/s3-server.sh stop "$work" >/dev/null 2>&1 || true
  if [ "${BENCH_KEEP:-}" = 1 ]; then echo "bench: work directory kept: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

fact() { printf '%s=%s\n' "$1" "$2" >>"$results/facts.env"; }
show() { local s=${*//$work/\$WORK}; s=${s//$bin/volume-syncing-operator}; echo "${s//$rclone/rclone}"; }
kib_mib() { awk -v b="$1" 'BEGIN { printf "%.2f MiB (%d bytes)", b / 1048576, b }'; }
linkage() {
  local f
  f=$(file -b "$1")
  printf '%s%s' "$(grep -oE 'static-pie linked|statically linked|dynamically linked' <<<"$f" | head -1)" \
    "$(grep -q ', stripped' <<<"$f" && echo ', stripped')"
}

# The timed runs of two commands are split into hyperfine passes of BENCH_PASS_RUNS runs each,
# alternating the order of the commands, so that a drift of the machine's load does not favour
# one of them; the warm-up runs are in the first pass.
pass_runs=${BENCH_PASS_RUNS:-2}
compare() { # compare PREFIX "HYPERFINE OPTIONS" NAME1 CMD1 NAME2 CMD2
  local prefix=$1 opts done=0 n pass=0 w=$warmup
  read -r -a opts <<<"$2"
  while [ "$done" -lt "$runs" ]; do
    n=$((runs - done < pass_runs ? runs - done : pass_runs))
    pass=$((pass + 1))
    if [ $((pass % 2)) = 1 ]; then
      hyperfine "${opts[@]}" --warmup "$w" --runs "$n" --export-json "$results/$prefix-$pass.json" \
        -n "$3" "$4" -n "$5" "$6" >&2
    else
      hyperfine "${opts[@]}" --warmup "$w" --runs "$n" --export-json "$results/$prefix-$pass.json" \
        -n "$5" "$6" -n "$3" "$4" >&2
    fi
    done=$((done + n))
    w=0
  done
}

# --- 8. latency (defined here, run last, or alone with BENCH_SECTIONS=8) ----------------------------
latency() {
  step "8. at a real bucket's latency: ${BENCH_LAT_DELAYS:-10 50} ms one way"
  python3 scripts/bench_latency.py run "$work" "$results" "$bin" "$rclone"
}
if [ "$sections" = 8 ]; then
  scripts/s3-server.sh start "$work"
  eval "$(scripts/s3-server.sh env "$work")"
  latency
  python3 scripts/bench_latency.py report "$results" "$out" "$plot_python"
  step "wrote section 8 into $out"
  exit 0
fi

# --- 11. fixed costs, before vs. after issue 28 (defined here, run last, or alone) ---------------
fixed_costs() {
  if [ -z "$before28" ]; then
    echo "bench: section 11 skipped: BENCH_BEFORE28_BINARY is not set (make bench sets it)" >&2
    return 0
  fi
  step "11. fixed costs of a run: before ($before28_rev) vs. after (issue 28)"
  BENCH_BEFORE28_REV=$before28_rev python3 scripts/bench_fixed_cost.py run "$work" "$results" \
    "$bin" "$before28" "$rclone"
}
if [ "$sections" = 11 ]; then
  scripts/s3-server.sh start "$work"
  eval "$(scripts/s3-server.sh env "$work")"
  fixed_costs
  python3 scripts/bench_fixed_cost.py report "$results" "$out"
  step "wrote section 11 into $out"
  exit 0
fi

# --- the machine ------------------------------------------------------------------------------
step "machine"
validation=0 why=()
[ "$files" = 2000 ] || why+=("BENCH_FILES=$files")
[ "$small" = 10 ] || why+=("BENCH_SMALL_REMOTE=$small")
[ "$big" = 20000 ] || why+=("BENCH_BIG_REMOTE=$big")
[ "$runs" -ge 10 ] || why+=("BENCH_RUNS=$runs")
[ "$rss_runs" -ge 5 ] || why+=("BENCH_RSS_RUNS=$rss_runs")
[ "$watch_files" = 20000 ] || why+=("BENCH_WATCH_FILES=$watch_files")
[ "$watch_runs" -ge 10 ] || why+=("BENCH_WATCH_RUNS=$watch_runs")
[ "${#why[@]}" -eq 0 ] || validation=1
fact validation "$validation"
fact validation_why "${why[*]:-}"
fact note "${BENCH_NOTE:-}"
fact date "$(date -u '+%Y-%m-%d %H:%M:%S')"
fact cpu "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
fact cores "$(nproc) of $(grep -c '^processor' /proc/cpuinfo)"
fact memory "$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
fact kernel "$(uname -sr) $(uname -m)"
fact os "$(. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-?}")"
fact rclone_version "$("$rclone" version | head -1)"
fact binary_version "$("$bin" --version)"
fact binary "$(realpath --relative-to=. "$bin")"
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -z "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] || commit="$commit with uncommitted changes"
fact commit "$commit"
fact hyperfine "$(hyperfine --version)"
fact load_start "$(cut -d' ' -f1-3 /proc/loadavg)"
fact files "$files"
fact small_remote "$small"
fact big_remote "$big"
fact runs "$runs"
fact warmup "$warmup"
fact pass_runs "$pass_runs"
fact rss_runs "$rss_runs"
fact watch_files "$watch_files"
fact watch_runs "$watch_runs"
[ "$validation" = 0 ] || echo "bench: validation run (${why[*]}): the report will say so" >&2

# --- data: the tree, and the remotes created directly in the S3 server's data directory --------
step "data: a tree of $files files; flat remotes of $small and $big objects"
tree=$work/tree
bench_py tree "$tree" "$files"
fact tree_bytes "$(find "$tree" -type f -printf '%s\n' | awk '{ s += $1 } END { print s }')"
fact tree_dirs "$(find "$tree" -mindepth 1 -type d | wc -l)"
bench_py flat "$work/s3/demo/small" "$small"
bench_py flat "$work/s3/demo/big" "$big"

scripts/s3-server.sh start "$work"
eval "$(scripts/s3-server.sh env "$work")"
# Plain rclone gets the same [remote] section our binary renders from REMOTE_*.
conf=$work/rclone.conf
cat >"$conf" <<CONF
[remote]
type = $REMOTE_TYPE
provider = $REMOTE_PROVIDER
access_key_id = $REMOTE_ACCESS_KEY_ID
endpoint = $REMOTE_ENDPOINT
secret_access_key = $REMOTE_SECRET_ACCESS_KEY
CONF
chmod 644 "$conf"

# Plain rclone also gets exactly the arguments our binary gives rclone: a recorder in place of
# rclone writes them down (one file per invocation, NUL-separated) and runs the real rclone.
argv_dir=$work/argv
mkdir -p "$argv_dir"
chmod 1777 "$argv_dir"
recorder=$work/rclone-recorder
cat >"$recorder" <<'SH'
#!/bin/sh
printf '%s\0' "$@" >"$BENCH_ARGV_DIR/$(date +%s%N).$$"
exec "$BENCH_REAL_RCLONE" "$@"
SH
chmod 755 "$recorder"
quote() { python3 -c 'import shlex, sys; print(shlex.join(sys.argv[1:]))' "$@"; }
# recorded OPERATION COMMAND…: runs COMMAND (our binary) with the recorder and prints, shell-quoted,
# the rclone command line it ran for OPERATION (sync, lsf…), with our config file instead of its
# temporary one.
recorded() {
  local op=$1 f args
  shift
  rm -f "$argv_dir"/*
  RCLONE_BINARY=$recorder BENCH_ARGV_DIR=$argv_dir BENCH_REAL_RCLONE=$rclone "$@" >/dev/null 2>&1 || true
  for f in $(ls "$argv_dir" | sort -n); do
    mapfile -d '' args <"$argv_dir/$f"
    if [ "${args[0]:-}" = --config ] && [ "${args[2]:-}" = "$op" ]; then
      args[1]=$conf
      quote "$rclone" "${args[@]}"
      return 0
    fi
  done
  die "our binary did not run rclone $op: $*"
}

# --- 1. overhead -------------------------------------------------------------------------------
step "1. overhead: sync-to-remote vs. plain rclone sync, nothing changed"
ours="$bin sync-to-remote -s $tree -d demo/tree"
"$bin" sync-to-remote -s "$tree" -d demo/tree 2>"$work/seed.log" || { cat "$work/seed.log" >&2; die "the first upload failed"; }
# The same rclone command line as ours (at the time of writing: sync SRC remote:DST/
# --create-empty-src-dirs --exclude '/.volume-syncing-operator.*' --use-json-log --stats 30s
# --stats-log-level NOTICE --stats-one-line).
plain=$(recorded sync $ours)
fact overhead_ours "$(show "$ours")"
fact overhead_plain "$(show "$plain")"
# Steady state: a second run of each transfers and deletes nothing.
"$bin" --log-format json sync-to-remote -s "$tree" -d demo/tree 2>"$work/check-ours.log"
eval "$plain" 2>"$work/check-plain.log"
fields() { grep -o "$1" | tr -d '"' | tr '\n' ' ' | sed 's/ $//'; }
check="our second run: $(grep 'sync finished' "$work/check-ours.log" | fields '"\(result\|transferred_files\|deleted_files\)":"*[a-z0-9]*')"
check="$check; plain rclone: $(tail -1 "$work/check-plain.log" | fields '"\(checks\|transfers\|deletes\)":[0-9]*')"
fact overhead_check "$check"
compare overhead "-N" "ours" "$ours" "plain rclone" "$plain"
for _ in $(seq 1 "$runs"); do
  bench_py phases "$results/phases.jsonl" -- "$bin" --log-format json sync-to-remote \
    -s "$tree" -d demo/tree
done

# --- 2. the empty-remote valve -------------------------------------------------------------------
step "2. the empty-remote valve: $small vs. $big objects"
# Cross-check through the binary: a restore into a directory that holds data runs the valve;
# an unknown rclone flag after `--` then makes the sync itself fail at once.
target=$work/restore-target
mkdir -p "$target" "$work/tmp-runner"
echo data >"$target/file"
run_as=""
if [ "$(id -u)" = 0 ]; then
  # As root, foreign-owner would refuse first (the target is root's): run as uid 65534.
  command -v setpriv >/dev/null || die "setpriv (util-linux) is needed when running as root"
  chown -R 65534:65534 "$target" "$work/tmp-runner"
  run_as="setpriv --reuid=65534 --regid=65534 --clear-groups env TMPDIR=$work/tmp-runner "
fi
valve() { echo "$run_as$bin remote-to-local-sync -s demo/$1 -d $target --dry-run --retries 0 ${2:-}-- --bench-stop-after-the-valves"; }
fact valve_binary_cmd "$(show "$(valve big)")"

# The probe: exactly the listing our binary runs for the valve (at the time of writing
# `lsf --max-depth 1 --exclude '/.volume-syncing-operator.*' remote:PATH/`), stopped after its
# first line by `head -1` as our binary stops it.
declare -A probe_cmd
for which in small big; do
  probe_cmd[$which]="$(recorded lsf $(valve "$which"))"
  # One run with --dump headers: which requests did the probe send, and when did its first line
  # arrive?
  eval "bench_py trace probe_$which -- ${probe_cmd[$which]} --dump headers" \
    >>"$results/facts.env"
done
fact probe_cmd "$(show "${probe_cmd[big]} | head -1")"
compare valve-probe "" "small" "${probe_cmd[small]} | head -1" "big" "${probe_cmd[big]} | head -1"
set +e
$(valve big "-vv ") 2>"$work/valve-check.log"
code=$?
set -e
probe_ran=$(grep -c 'emptiness check' "$work/valve-check.log" || true)
refused=$(grep -c 'refused' "$work/valve-check.log" || true)
if [ "$code" = 1 ] && [ "$probe_ran" -gt 0 ] && [ "$refused" = 0 ]; then
  fact valve_binary_check "the binary started the emptiness probe, was not refused, and exited 1 on the unknown flag"
else
  fact valve_binary_check "**NOT VALID**: exit code $code, probe lines $probe_ran, refusal lines $refused (the timing below does not isolate the valve)"
  tail -5 "$work/valve-check.log" >&2
fi
compare valve-binary "-N -i" "small" "$(valve small)" "big" "$(valve big)"

# --- 3. memory -----------------------------------------------------------------------------------
step "3. memory in --schedule mode ($rss_runs processes)"
sched=("$bin" sync-to-remote -s "$tree" -d demo/tree --schedule '@every 1h' --pid-path "$work/sched.pid")
fact rss_cmd "$(show "${sched[*]:0:6}") --schedule '@every 1h' --pid-path \$WORK/sched.pid"
for i in $(seq 1 "$rss_runs"); do
  bench_py rss "$results/rss.jsonl" "$work/sched-$i.log" -- "${sched[@]}"
  tail -1 "$results/rss.jsonl" >&2
done
for _ in $(seq 1 "$rss_runs"); do
  eval "bench_py maxrss $results/plain-rss.jsonl -- $plain"
done

# --- 4. size and start-up -------------------------------------------------------------------------
step "4. binary size and --version start-up"
fact release_size "$(kib_mib "$(stat -c %s "$bin")")"
fact release_kind "$(linkage "$bin")"
static=${BENCH_STATIC_BINARY:-}
if [ -z "$static" ] && grep -qE '^build-static:' Makefile; then
  if ${MAKE:-make} --no-print-directory build-static >&2; then
    static=$(ls -t target/*-linux-musl/release/volume-syncing-operator 2>/dev/null | head -1 || true)
    [ -n "$static" ] || fact static_note "\`make build-static\` ran, but its binary was not found under target/*-linux-musl/release/ (set BENCH_STATIC_BINARY)."
  else
    fact static_note "\`make build-static\` failed; only the release build is reported."
  fi
elif [ -z "$static" ]; then
  fact static_note "There is no \`make build-static\` target yet: the size reported is that of the release build (\`cargo build --release\`), which is not a static binary."
fi
startup=(-n "volume-syncing-operator --version" "$bin --version")
if [ -n "$static" ] && [ -x "$static" ]; then
  static=$(realpath "$static")
  fact static_binary "$(realpath --relative-to=. "$static")"
  fact static_size "$(kib_mib "$(stat -c %s "$static")")"
  fact static_kind "$(linkage "$static")"
  startup+=(-n "static volume-syncing-operator --version" "$static --version")
fi
startup+=(-n "rclone --version (reference)" "$rclone --version")
hyperfine -N --warmup 5 --runs $((runs < 6 ? 30 : runs * 5)) --export-json "$results/startup-1.json" \
  "${startup[@]}" >&2

# --- 5. watch mode ------------------------------------------------------------------------------------
step "5. watch mode: one changed file in a tree of $watch_files files"
wtree=$work/watch-tree
bench_py tree "$wtree" "$watch_files"
fact watch_tree_bytes "$(find "$wtree" -type f -printf '%s\n' | awk '{ s += $1 } END { print s }')"
fact watch_tree_dirs "$(find "$wtree" -mindepth 1 -type d | wc -l)"
"$bin" sync-to-remote -s "$wtree" -d demo/watch 2>"$work/watch-seed.log" ||
  { cat "$work/watch-seed.log" >&2; die "the upload of the watched tree failed"; }
# The denominator: a full sync of the same tree with nothing to transfer, as a one-shot run.
full=("$bin" --log-format json sync-to-remote -s "$wtree" -d demo/watch)
fact watch_full_cmd "$(show "${full[*]}")"
for _ in $(seq 1 "$watch_runs"); do
  bench_py summary "$results/watch-full.jsonl" full -- "${full[@]}"
done
tail -1 "$results/watch-full.jsonl" >&2
for debounce in 2s 200ms; do
  watch=("$bin" --log-format json sync-to-remote -s "$wtree" -d demo/watch --watch
    --pid-path "$work/watch.pid")
  [ "$debounce" = 2s ] || watch+=(--debounce "$debounce") # 2s is the default
  fact "watch_cmd_$debounce" "$(show "${watch[*]}")"
  bench_py watch "$results/watch.jsonl" "$debounce" "$wtree" "$work/s3/demo/watch" \
    "$watch_runs" -- "${watch[@]}"
  tail -1 "$results/watch.jsonl" | cut -c1-600 >&2
done

# --- 6. restore fidelity: before vs. after ----------------------------------------------------------
if [ -n "${BENCH_BASELINE_BINARY:-}" ]; then
  restore_files=${BENCH_RESTORE_FILES:-20000}
  restore_runs=${BENCH_RESTORE_RUNS:-5}
  base=$(realpath "$BENCH_BASELINE_BINARY")
  step "6. restore fidelity: before ($base) vs. after, no-change sync and a $restore_files-object restore"
  fact fidelity_baseline "$("$base" --version) at $(realpath --relative-to=. "$base")"
  fact fidelity_restore_files "$restore_files"
  fact fidelity_restore_runs "$restore_runs"
  # a. The no-change sync of section 1's tree, each binary to its own remote path.
  "$base" sync-to-remote -s "$tree" -d demo/fidelity-before 2>/dev/null
  "$bin" sync-to-remote -s "$tree" -d demo/fidelity-after 2>/dev/null
  before_sync="$base sync-to-remote -s $tree -d demo/fidelity-before"
  after_sync="$bin sync-to-remote -s $tree -d demo/fidelity-after"
  fact fidelity_sync_cmd "$(show "$after_sync") (before: the same with the baseline binary)"
  compare fidelity-sync "-N" "before" "$before_sync" "after" "$after_sync"
  # b. The restore of a remote written by the new binary (so it holds a manifest, which the old
  # binary ignores) into a fresh directory.
  rtree=$work/restore-tree
  bench_py tree "$rtree" "$restore_files"
  "$bin" sync-to-remote -s "$rtree" -d demo/fidelity-restore 2>/dev/null
  before_restore="$base remote-to-local-sync -s demo/fidelity-restore -d $work/restored-before"
  after_restore="$bin remote-to-local-sync -s demo/fidelity-restore -d $work/restored-after"
  fact fidelity_restore_cmd "$(show "$after_restore") (before: the same with the baseline binary)"
  saved_runs=$runs saved_warmup=$warmup
  runs=$restore_runs warmup=1
  prepare=$work/fidelity-prepare.sh
  printf '#!/bin/sh\nrm -rf %s %s\n' "$work/restored-before" "$work/restored-after" >"$prepare"
  chmod 755 "$prepare"
  compare fidelity-restore "-N --prepare $prepare" "before" "$before_restore" "after" "$after_restore"
  runs=$saved_runs warmup=$saved_warmup
  if [ -d "$work/restored-after" ] && diff -r "$rtree" "$work/restored-after" >/dev/null; then
    fact fidelity_restore_check "the last restore by the new binary equals the tree"
  fi
fi
# --- 7. the lease ------------------------------------------------------------------------------------
step "7. the lease: rclone calls and time of a one-shot upload of one changed file"
lease_cmd=("$bin" --log-format json -v sync-to-remote -s "$tree" -d demo/tree)
fact lease_cmd "$(show "${lease_cmd[*]}")"
for i in $(seq 1 "$runs"); do
  # One changed file: a run that would write nothing takes no lease (section 1).
  echo "lease run $i $(date +%s%N)" >"$tree/lease-bench.txt"
  RCLONE_BINARY=$recorder BENCH_ARGV_DIR=$argv_dir BENCH_REAL_RCLONE=$rclone \
    bench_py lease "$results/lease.jsonl" "$argv_dir" -- "${lease_cmd[@]}"
done
tail -1 "$results/lease.jsonl" >&2

# --- sections 1-7 alone: their report replaces BENCH_OUT's part before section 8 -------------------
if [ "$sections" = 1-7 ]; then
  fact load_end "$(cut -d' ' -f1-3 /proc/loadavg)"
  bench_py report "$results" "$work/sections-1-7.md"
  { cat "$work/sections-1-7.md"; sed -n '/^<!-- bench section 8 (latency): begin -->$/,$p' "$out"; } >"$work/out.md"
  cat "$work/out.md" >"$out"
  step "wrote sections 1-7 into $out"
  exit 0
fi

# --- 8. latency: it is the longest --------------------------------------------------------------------
latency

# --- 11. fixed costs, last ----------------------------------------------------------------------------
fixed_costs

# --- the report -------------------------------------------------------------------------------------
fact load_end "$(cut -d' ' -f1-3 /proc/loadavg)"
bench_py report "$results" "$out"
python3 scripts/bench_latency.py report "$results" "$out" "$plot_python"
if [ -n "$before28" ]; then python3 scripts/bench_fixed_cost.py report "$results" "$out"; fi
step "wrote $out"
