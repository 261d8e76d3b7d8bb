# Shared by scripts/cluster/up.sh and down.sh (sourced, not run).
# Everything the cluster writes lives under $STATE (target/cluster of the clone), except what the
# kubelet insists on writing elsewhere, which down.sh removes: see up.sh's header.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STATE=${VSO_CLUSTER_STATE:-$ROOT/target/cluster}
KUBE_VERSION=${KUBE_VERSION:-1.20.2}
KUBE_CACHE=${KUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/volume-syncing-operator/kubernetes-$KUBE_VERSION}
KBIN=$KUBE_CACHE/bin
# The Pod sandbox image (built FROM scratch from the source tree's pause.c) and the test image
# (Debian's busybox-static FROM scratch). Never pulled: they only exist on the local engine.
PAUSE_IMAGE=${PAUSE_IMAGE:-volume-syncing-operator/pause:3.2}
BUSYBOX_IMAGE=${BUSYBOX_IMAGE:-volume-syncing-operator/busybox:test}
NODE_NAME=vso-node
# Sysctls the kubelet sets (container manager: setupKernelTunables) and kube-proxy would:
# recorded before the start, written back by down.sh.
SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.conf.all.route_localnet)
# Paths outside $STATE the kubelet creates whatever its flags say (pod logs and their links);
# the others it would create (/var/lib/kubelet, /usr/libexec/kubernetes) are moved under $STATE.
OUTSIDE_DIRS=(/var/log/pods /var/log/containers /var/lib/kubelet /usr/libexec/kubernetes)
# Processes, in the order down.sh stops them (the kubelet first: it would restart containers).
COMPONENTS=(kubelet kube-scheduler kube-controller-manager kube-apiserver etcd)

log() { echo "cluster: $*" >&2; }
die() { echo "cluster: $*" >&2; exit 1; }

bridge_ip() {
  ip -4 -o addr show docker0 2>/dev/null | awk '{print $4}' | cut -d/ -f1 | head -1
}

# pid of a component if it is alive (and is what we started: its command line names it).
alive() {
  local f=$STATE/pids/$1.pid pid
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "$1" || return 1
  echo "$pid"
}

iptables_backends() {
  local b
  for b in iptables iptables-legacy ip6tables ip6tables-legacy; do
    command -v "$b" >/dev/null && "$b" -t filter -S >/dev/null 2>&1 && echo "$b"
  done
  return 0
}

# "backend table chain" for every KUBE-* chain there is now.
kube_chains() {
  local b t
  for b in $(iptables_backends); do
    for t in filter nat mangle; do
      "$b" -t "$t" -S 2>/dev/null | awk -v b="$b" -v t="$t" '$1 == "-N" && $2 ~ /^KUBE-/ {print b, t, $2}'
    done
  done
}
