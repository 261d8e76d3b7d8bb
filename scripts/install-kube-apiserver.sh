#!/usr/bin/env bash
# Builds a real kube-apiserver (and unpacks etcd) for the operator's tests into DIR/bin, from
# Debian 12's own packages only: the source package `kubernetes` (1.20.5+really1.20.2, the whole
# tree with vendor/), `golang-1.19-go` to build it, `etcd-server` (3.4) to store its data, and
# `golang-github-modern-go-reflect2-dev` (1.0.2) copied over the vendored reflect2 1.0.1, which
# crashes under Go 1.19. Nothing is installed system-wide: apt runs with a private sources list
# and state dir (the machine's apt is untouched), and `apt-get download` + `dpkg-deb -x` unpack
# the packages in a scratch directory that is deleted afterwards (about 3.7 GB while building).
# Usage: scripts/install-kube-apiserver.sh DIR
set -euo pipefail
dir=$1
# Each tool is made only when missing (or, for etcd, not the ELF binary).
have_etcd() { [ -x "$dir/bin/etcd" ] && head -c 4 "$dir/bin/etcd" | grep -q 'ELF'; }
if [ -x "$dir/bin/kube-apiserver" ] && have_etcd; then
  exit 0
fi
command -v apt-get >/dev/null || { echo "install-kube-apiserver: needs Debian's apt-get" >&2; exit 1; }
command -v make >/dev/null || { echo "install-kube-apiserver: needs make" >&2; exit 1; }
mkdir -p "$dir/bin"
# The scratch tree lives beside the tools (same disk) and is always removed.
work=$(mktemp -d "${TMPDIR:-/tmp}/kube-apiserver-build.XXXXXX")
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
echo "installing etcd and kube-apiserver from Debian 12's packages into $dir/bin (building kube-apiserver takes about 5 minutes)" >&2

# A private apt: the bookworm main archive with deb-src, its own lists and cache.
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
apt-get "${apt_opts[@]}" -qq download etcd-server >&2
mkdir root
dpkg-deb -x etcd-server_*.deb root
# /usr/bin/etcd (the package also has an init script named etcd).
etcd=root/usr/bin/etcd
head -c 4 "$etcd" | grep -q 'ELF' || { echo "install-kube-apiserver: no etcd binary in etcd-server" >&2; exit 1; }
install -m 0755 "$etcd" "$dir/bin/etcd.tmp" && mv "$dir/bin/etcd.tmp" "$dir/bin/etcd"
"$dir/bin/etcd" --version | sed -n 1p >&2
if [ -x "$dir/bin/kube-apiserver" ]; then
  exit 0
fi
apt-get "${apt_opts[@]}" -qq download golang-1.19-go golang-1.19-src \
  golang-github-modern-go-reflect2-dev >&2
for deb in ./golang-*.deb; do dpkg-deb -x "$deb" root; done
apt-get "${apt_opts[@]}" -qq --download-only source kubernetes=1.20.5+really1.20.2-1.1+deb12u1 >&2 ||
  apt-get "${apt_opts[@]}" -qq --download-only source kubernetes >&2
dsc=$(ls kubernetes_*.dsc | head -1)
command -v dpkg-source >/dev/null || { echo "install-kube-apiserver: needs dpkg-dev (dpkg-source)" >&2; exit 1; }
dpkg-source --no-check -x "$dsc" src >&2

goroot="$work/root/usr/lib/go-1.19"
[ -x "$goroot/bin/go" ] || { echo "install-kube-apiserver: go 1.19 not found in $goroot" >&2; exit 1; }
reflect2=$(find "$work/root/usr/share/gocode/src" -type d -path '*github.com/modern-go/reflect2' | head -1)
[ -n "$reflect2" ] || { echo "install-kube-apiserver: reflect2 1.0.2 sources not found" >&2; exit 1; }
rm -rf src/vendor/github.com/modern-go/reflect2
cp -r "$reflect2" src/vendor/github.com/modern-go/reflect2

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
(cd src && make WHAT=cmd/kube-apiserver >&2)
bin=$(find src/_output -type f -name kube-apiserver -perm -u+x | head -1)
[ -n "$bin" ] || { echo "install-kube-apiserver: the build made no kube-apiserver" >&2; exit 1; }
install -m 0755 "$bin" "$dir/bin/kube-apiserver.tmp" && mv "$dir/bin/kube-apiserver.tmp" "$dir/bin/kube-apiserver"
"$dir/bin/kube-apiserver" --version >&2
