#!/usr/bin/env bash
# Stops the cluster of scripts/cluster/up.sh and gives the machine back as it was before:
# the kubelet first (it would restart what is removed), every k8s_ container of the engine, the
# control plane and etcd (by the pids up.sh recorded, never by name), the kubelet's mounts under
# $STATE, the sysctls as recorded before the start, the directories outside $STATE it created
# (/var/log/pods, ...), kubepods cgroups and KUBE-* iptables chains that were not there before.
# The logs stay in $STATE/logs; the rest of $STATE is removed. Safe to run at any time, twice, or
# when nothing runs; exits non-zero only when something could not be restored.
# Usage: scripts/cluster/down.sh   (make cluster-down)
source "$(dirname "$0")/common.sh"
failed=0
warn() { echo "cluster-down: $*" >&2; failed=1; }

stop() { # NAME
  local pid i
  pid=$(alive "$1") || { rm -f "$STATE/pids/$1.pid"; return 0; }
  # Its own session (setsid in up.sh): the group holds only it and its children.
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 100); do
    [ -d "/proc/$pid" ] || break
    sleep 0.1
  done
  if [ -d "/proc/$pid" ]; then
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
  fi
  [ -d "/proc/$pid" ] && grep -qv '^State:.*Z' "/proc/$pid/status" && warn "$1 (pid $pid) did not stop"
  rm -f "$STATE/pids/$1.pid"
}

stop kubelet
# Every container the kubelet made (dockershim names them k8s_<container>_<pod>_...).
ids=$(docker ps -aq --filter name=^k8s_ 2>/dev/null || true)
if [ -n "$ids" ]; then
  # shellcheck disable=SC2086
  docker rm -f -v $ids >/dev/null || warn "could not remove k8s_ containers"
fi
for c in kube-scheduler kube-controller-manager kube-apiserver etcd; do stop "$c"; done

# The kubelet's mounts (secret and projected volumes are tmpfs under its root dir), deepest first.
if [ -d "$STATE" ]; then
  awk -v s="$STATE/" 'index($2, s) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" || echo "cluster-down: could not unmount $m" >&2
  done
fi

if [ -f "$STATE/before/sysctls" ]; then
  while IFS='=' read -r key value; do
    [ "$(sysctl -n "$key" 2>/dev/null)" = "$value" ] || sysctl -q -w "$key=$value" >/dev/null || warn "could not restore $key=$value"
  done <"$STATE/before/sysctls"
fi

if [ -f "$STATE/before/dirs" ]; then
  for d in "${OUTSIDE_DIRS[@]}"; do
    grep -qxF "$d" "$STATE/before/dirs" || rm -rf "$d"
  done
fi

# kubepods cgroups (none with --cgroups-per-qos=false, but a kubelet started otherwise makes them):
# the ones not there before, innermost first (rmdir of an empty cgroup; no process is left).
if [ -f "$STATE/before/cgroups" ]; then
  for top in $(find /sys/fs/cgroup -maxdepth 2 -name 'kubepods*' 2>/dev/null); do
    grep -qxF "$top" "$STATE/before/cgroups" && continue
    find "$top" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    [ -d "$top" ] && warn "could not remove cgroup $top"
  done
fi

# KUBE-* iptables chains that were not there before: first the rules that jump to them, then
# flush all of them (they may refer to each other), then delete them.
if [ -f "$STATE/before/chains" ]; then
  new=$(kube_chains | grep -vxF -f "$STATE/before/chains" || true)
  if [ -n "$new" ]; then
    while read -r b t chain; do
      "$b" -t "$t" -S | grep -E -- "-j $chain( |\$)" | grep -v -- "^-A $chain " | sed 's/^-A /-D /' |
        while read -r rule; do
          # shellcheck disable=SC2086
          "$b" -t "$t" $rule || true
        done
    done <<<"$new"
    while read -r b t chain; do "$b" -t "$t" -F "$chain" || true; done <<<"$new"
    while read -r b t chain; do "$b" -t "$t" -X "$chain" || warn "could not delete $b -t $t $chain"; done <<<"$new"
  fi
fi

# Keep the logs; the rest (etcd data, certificates, the kubelet's root dir) goes.
if [ -d "$STATE" ]; then
  if [ -n "$(awk -v s="$STATE/" 'index($2, s) == 1' /proc/mounts)" ]; then
    warn "mounts left under $STATE; not removing it"
  else
    find "$STATE" -mindepth 1 -maxdepth 1 ! -name logs ! -name build.log -exec rm -rf {} +
  fi
fi
[ "$failed" = 0 ] && echo "cluster-down: stopped and cleaned" >&2
exit "$failed"
