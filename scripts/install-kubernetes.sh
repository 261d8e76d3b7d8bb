#!/usr/bin/env bash
# Builds the rest of a single-node Kubernetes 1.20.2 for the cluster tests (tests/it/cluster/,
# scripts/cluster/) into DIR/bin, next to the kube-apiserver and etcd of
# scripts/install-kube-apiserver.sh (which this script runs first, and which returns at once when
# they are there): kubelet, kube-controller-manager, kube-scheduler, and `pause`, the static
# program of the Pod sandbox image (the source tree's build/pause/linux/pause.c). Only what is
# missing is built, from the same Debian 12 source package and Go toolchain, with the same
# private apt (the machine's apt is untouched) and a scratch tree that is always deleted
# (about 4.5 GB while building; 5-10 minutes on a loaded 2-core machine).
#
# ONE PATCH to the kubelet, and why: on these machines the processes lack CAP_SYS_RESOURCE, so
# the kernel refuses any NEGATIVE oom_score_adj. dockershim gives every Pod sandbox -998 and
# the kubelet gives containers of Guaranteed Pods -997; runc then fails to write it and every
# Pod sandbox dies with "runc create failed: ... can't get final child's PID from pipe: EOF".
# Both constants are set to 0 before building (and the kubelet runs with --oom-score-adj=0).
# The only effect is that, under memory pressure, the kernel's OOM killer no longer prefers
# application containers over sandboxes: irrelevant for a test node.
# Usage: scripts/install-kubernetes.sh DIR
set -euo pipefail
dir=$1
here=$(cd "$(dirname "$0")" && pwd)
"$here/install-kube-apiserver.sh" "$dir"

components=(kubelet kube-controller-manager kube-scheduler)
missing=()
for c in "${components[@]}"; do
  [ -x "$dir/bin/$c" ] || missing+=("$c")
done
have_pause() { [ -x "$dir/bin/pause" ] && file "$dir/bin/pause" | grep -q 'statically linked'; }
if [ ${#missing[@]} -eq 0 ] && have_pause; then
  exit 0
fi
command -v apt-get >/dev/null || { echo "install-kubernetes: needs Debian's apt-get" >&2; exit 1; }
command -v make >/dev/null || { echo "install-kubernetes: needs make" >&2; exit 1; }
command -v gcc >/dev/null && [ -f /usr/lib/x86_64-linux-gnu/libc.a ] ||
  { echo "install-kubernetes: needs gcc and libc6-dev (a static pause): apt-get install gcc libc6-dev" >&2; exit 1; }
command -v dpkg-source >/dev/null || { echo "install-kubernetes: needs dpkg-dev (dpkg-source)" >&2; exit 1; }
mkdir -p "$dir/bin"
work=$(mktemp -d "${TMPDIR:-/tmp}/kubernetes-build.XXXXXX")
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
echo "building ${missing[*]:-} pause from Debian 12's kubernetes source package into $dir/bin (5-10 minutes)" >&2

# A private apt: the bookworm main archive with deb-src, its own lists and cache
# (the same as scripts/install-kube-apiserver.sh).
mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial" "$work/apt/etc/preferences.d"
cat >"$work/apt/sources.list" <<'EOF'
deb http://deb.debian.org/debian bookworm main
deb-src http://deb.debian.org/debian bookworm main
EOF
apt_opts=(
  -o "Dir::Etc::SourceList=$work/apt/sources.list"
  -o "Dir::Etc::SourceParts=/dev/null"
  -o "Dir::Etc::Preferences=/dev/null"
  -o "Dir::Etc::PreferencesParts=$work/apt/etc/preferences.d"
  -o "Dir::State=$work/apt"
  -o "Dir::State::Lists=$work/apt/lists"
  -o "Dir::State::status=/var/lib/dpkg/status"
  -o "Dir::Cache=$work/apt/cache"
  -o "Debug::NoLocking=1"
  -o "APT::Sandbox::User=root"
)
apt-get "${apt_opts[@]}" -qq update >&2
cd "$work"
apt-get "${apt_opts[@]}" -qq --download-only source kubernetes=1.20.5+really1.20.2-1.1+deb12u1 >&2 ||
  apt-get "${apt_opts[@]}" -qq --download-only source kubernetes >&2
dsc=$(ls kubernetes_*.dsc | head -1)
dpkg-source --no-check -x "$dsc" src >&2

# pause: static, stripped; the sandbox image is built FROM scratch with it (scripts/cluster/).
if ! have_pause; then
  gcc -Os -static -Wall -Werror -DVERSION=v3.2-volume-syncing-operator \
    -o "$dir/bin/pause.tmp" src/build/pause/linux/pause.c
  strip "$dir/bin/pause.tmp"
  mv "$dir/bin/pause.tmp" "$dir/bin/pause"
fi
[ ${#missing[@]} -gt 0 ] || exit 0

apt-get "${apt_opts[@]}" -qq download golang-1.19-go golang-1.19-src \
  golang-github-modern-go-reflect2-dev >&2
mkdir root
for deb in ./golang-*.deb; do dpkg-deb -x "$deb" root; done
goroot="$work/root/usr/lib/go-1.19"
[ -x "$goroot/bin/go" ] || { echo "install-kubernetes: go 1.19 not found in $goroot" >&2; exit 1; }
# The vendored reflect2 1.0.1 crashes under Go 1.19: Debian's 1.0.2 replaces it.
reflect2=$(find "$work/root/usr/share/gocode/src" -type d -path '*github.com/modern-go/reflect2' | head -1)
[ -n "$reflect2" ] || { echo "install-kubernetes: reflect2 1.0.2 sources not found" >&2; exit 1; }
rm -rf src/vendor/github.com/modern-go/reflect2
cp -r "$reflect2" src/vendor/github.com/modern-go/reflect2

# The OOM patch (see the header). Each substitution must hit exactly its line, or the build stops:
# a silent miss would give a kubelet whose every Pod sandbox fails.
patch_const() { # FILE NAME OLD-VALUE
  local file=src/$1 re="($2\\s+int\\s*=\\s*)$3\\b"
  [ "$(grep -cE "$re" "$file")" = 1 ] ||
    { echo "install-kubernetes: '$2 int = $3' not found once in $1: the OOM patch no longer applies" >&2; exit 1; }
  sed -i -E "s/$re/\\10 \\/\\/ was $3: no CAP_SYS_RESOURCE on the test machines/" "$file"
  grep -E "$2\\s+int\\s*=\\s*0 " "$file" >&2 || { echo "install-kubernetes: patching $1 failed" >&2; exit 1; }
}
patch_const pkg/kubelet/dockershim/docker_sandbox.go defaultSandboxOOMAdj -998
patch_const pkg/kubelet/qos/policy.go guaranteedOOMScoreAdj -997

export GOROOT="$goroot" PATH="$goroot/bin:$PATH" GOPATH="$work/gopath" GOCACHE="$work/gocache"
export GOFLAGS=-mod=vendor GO111MODULE=on GOTOOLCHAIN=local
# The build copies its binaries with `rsync -pc SRC DST` (hack/lib/golang.sh, place_bins) and
# nothing else; where rsync is not installed a copy that keeps the mode does the same.
if ! command -v rsync >/dev/null; then
  mkdir -p "$work/shim"
  printf '%s\n' '#!/bin/sh' '# rsync -pc SRC DST, as the kubernetes build uses it' \
    'shift; exec cp -p "$@"' >"$work/shim/rsync"
  chmod +x "$work/shim/rsync"
  export PATH="$PATH:$work/shim"
fi
what=""
for c in "${missing[@]}"; do what="$what cmd/$c"; done
(cd src && make WHAT="${what# }" >&2)
for c in "${missing[@]}"; do
  bin=$(find src/_output -type f -name "$c" -perm -u+x | head -1)
  [ -n "$bin" ] || { echo "install-kubernetes: the build made no $c" >&2; exit 1; }
  install -m 0755 "$bin" "$dir/bin/$c.tmp" && mv "$dir/bin/$c.tmp" "$dir/bin/$c"
  "$dir/bin/$c" --version >&2
done
