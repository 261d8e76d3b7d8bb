#!/usr/bin/env bash
# Starts a single-node Kubernetes 1.20.2 on this machine for the cluster tests and installs the
# operator into it; `scripts/cluster/down.sh` stops it and restores the machine.
#
#   etcd             127.0.0.1, random ports
#   kube-apiserver   the Docker bridge address (docker0, e.g. 172.17.0.1), a random port: the one
#                    address that both the host and the Pods (on the bridge) reach; no other
#                    interface. --enable-aggregator-routing: it calls the webhook at the Pod's
#                    address, never at a Service IP.
#   controller-manager, scheduler   no listening port at all
#   kubelet          dockershim on the local Docker engine, node IP = the bridge address, its
#                    API on the bridge address (client certificates only), --oom-score-adj=0
#                    (see scripts/install-kubernetes.sh for the OOM patch), no QoS cgroups, no
#                    iptables chains of its own, image GC off (the images are never pulled back)
#   no kube-proxy    nothing may send to a Service IP (no rule would rewrite it: the packet would
#                    leave the machine); in-cluster clients get KUBERNETES_SERVICE_HOST/PORT =
#                    the API server's bridge address (the overlay in $STATE/overlay).
# State, certificates, kubeconfigs and logs are in $STATE (target/cluster); the admin kubeconfig
# is $STATE/kubeconfig. Before anything starts, what the kubelet changes outside $STATE (sysctls,
# /var/log/pods, cgroups, iptables KUBE-* chains) is recorded in $STATE/before for down.sh.
# When a healthy cluster is already up (this script ran before) it only checks and returns.
# Usage: scripts/cluster/up.sh   (make cluster-up; needs make image and make kubernetes)
source "$(dirname "$0")/common.sh"

for tool in kube-apiserver etcd kubelet kube-controller-manager kube-scheduler pause; do
  [ -x "$KBIN/$tool" ] || die "$KBIN/$tool missing: run \`make kubernetes\` (builds it from Debian 12's sources, 10-15 min)"
done
command -v kubectl >/dev/null || die "kubectl not found on PATH (Debian: kubernetes-client)"
command -v openssl >/dev/null || die "openssl not found (Debian: openssl)"
command -v python3 >/dev/null || die "python3 not found"
docker info >/dev/null 2>&1 || die "no Docker engine (docker info failed)"
docker image inspect volume-syncing-operator:dev >/dev/null 2>&1 ||
  die "image volume-syncing-operator:dev missing: run \`make image\`"
[ "$(id -u)" = 0 ] || die "the kubelet must run as root"
BRIDGE=$(bridge_ip)
[ -n "$BRIDGE" ] || die "no docker0 bridge address"

if [ -f "$STATE/kubeconfig" ] && alive kubelet >/dev/null && alive kube-apiserver >/dev/null &&
  kubectl --kubeconfig "$STATE/kubeconfig" --request-timeout=10s get --raw /readyz >/dev/null 2>&1; then
  log "a cluster is already up ($STATE/kubeconfig)"
  exec "$(dirname "$0")/install-operator.sh"
fi
for c in "${COMPONENTS[@]}"; do
  if pid=$(alive "$c"); then die "$c (pid $pid) of a previous cluster still runs: run scripts/cluster/down.sh first"; fi
done
if [ -n "$(docker ps -aq --filter name=^k8s_)" ]; then
  die "k8s_ containers exist on this engine (another cluster, or a previous one not cleaned): run scripts/cluster/down.sh"
fi

started=$(date +%s)
mkdir -p "$STATE"
# A failed start leaves nothing behind.
trap 'status=$?; if [ $status -ne 0 ]; then log "start failed; cleaning up (logs in $STATE/logs)"; "$(dirname "$0")/down.sh" || true; fi' EXIT

# What down.sh restores.
rm -rf "$STATE/before" "$STATE/pids"
mkdir -p "$STATE/before" "$STATE/pids" "$STATE/logs"
for s in "${SYSCTLS[@]}"; do
  v=$(sysctl -n "$s" 2>/dev/null) && echo "$s=$v" >>"$STATE/before/sysctls"
done
for d in "${OUTSIDE_DIRS[@]}"; do [ -e "$d" ] && echo "$d" >>"$STATE/before/dirs"; done
touch "$STATE/before/dirs"
find /sys/fs/cgroup -maxdepth 2 -name 'kubepods*' >"$STATE/before/cgroups" 2>/dev/null || true
kube_chains >"$STATE/before/chains"

# The images the node needs, FROM scratch.
build_image() { # TAG DIR
  "$ROOT/scripts/docker-build.sh" -q --pull=false -t "$1" "$2" >/dev/null
}
img=$STATE/images
rm -rf "$img" && mkdir -p "$img/pause" "$img/busybox"
cp "$KBIN/pause" "$img/pause/pause"
printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' >"$img/pause/Dockerfile"
build_image "$PAUSE_IMAGE" "$img/pause"
file -L /bin/busybox | grep -q 'statically linked' ||
  die "/bin/busybox is not static: apt-get install busybox-static (or make busybox-static)"
cp /bin/busybox "$img/busybox/busybox"
printf 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\nENTRYPOINT ["/bin/sh"]\n' >"$img/busybox/Dockerfile"
build_image "$BUSYBOX_IMAGE" "$img/busybox"

free_port() { # ADDRESS
  python3 -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1],0)); print(s.getsockname()[1])' "$1"
}

# Certificates: one CA for the API server's serving certificate (the Pods' service-account ca.crt),
# the kubelet's client certificate check and the API server's client certificate to the kubelet.
pki=$STATE/pki
rm -rf "$pki" && mkdir -p "$pki"
(
  cd "$pki"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=vso-cluster-ca 2>/dev/null
  cat >apiserver.ext <<EOF
subjectAltName=IP:127.0.0.1,IP:$BRIDGE,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage=serverAuth
EOF
  printf 'extendedKeyUsage=clientAuth\n' >client.ext
  openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj /CN=kube-apiserver 2>/dev/null
  openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile apiserver.ext -out apiserver.crt 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout kubelet-client.key -out kubelet-client.csr \
    -subj "/O=system:masters/CN=kube-apiserver-kubelet-client" 2>/dev/null
  openssl x509 -req -in kubelet-client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile client.ext -out kubelet-client.crt 2>/dev/null
  openssl genrsa -out sa.key 2048 2>/dev/null
)
# Tokens: the admin (tests, kubectl), the controller manager and the scheduler (system:masters:
# this is a test node, their RBAC roles are not what is tested), the kubelet as its node (the Node
# authorizer and NodeRestriction apply, as on a real node).
tok() { openssl rand -hex 16; }
ADMIN_TOKEN=$(tok)
cat >"$pki/tokens.csv" <<EOF
$ADMIN_TOKEN,admin,1,"system:masters"
$(tok),system:kube-controller-manager,2,"system:masters"
$(tok),system:kube-scheduler,3,"system:masters"
$(tok),system:node:$NODE_NAME,4,"system:nodes"
EOF
API_PORT=$(free_port "$BRIDGE")
kubeconfig() { # FILE USER
  local token
  token=$(awk -F, -v u="$2" '$2 == u {print $1}' "$pki/tokens.csv")
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: vso
  cluster:
    server: https://$BRIDGE:$API_PORT
    certificate-authority: $pki/ca.crt
users:
- name: u
  user:
    token: $token
contexts:
- name: vso
  context:
    cluster: vso
    user: u
current-context: vso
EOF
}
kubeconfig "$STATE/kubeconfig.tmp" admin
kubeconfig "$pki/controller-manager.kubeconfig" system:kube-controller-manager
kubeconfig "$pki/scheduler.kubeconfig" system:kube-scheduler
kubeconfig "$pki/kubelet.kubeconfig" "system:node:$NODE_NAME"

# start NAME ARGS...: in its own session (it outlives this script), nice'd, logs in $STATE/logs.
start() {
  local name=$1
  shift
  setsid nice -n 5 "$KBIN/$name" "$@" >"$STATE/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$STATE/pids/$name.pid"
}
wait_for() { # WHAT SECONDS COMMAND...
  local what=$1 deadline=$(($(date +%s) + $2))
  shift 2
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || die "$what not ready after ${deadline}s; see $STATE/logs"
    sleep 0.5
  done
}

ETCD_CLIENT=$(free_port 127.0.0.1)
ETCD_PEER=$(free_port 127.0.0.1)
rm -rf "$STATE/etcd"
start etcd --data-dir "$STATE/etcd" --name vso \
  --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT" --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
  --initial-cluster "vso=http://127.0.0.1:$ETCD_PEER"

start kube-apiserver \
  --etcd-servers "http://127.0.0.1:$ETCD_CLIENT" \
  --bind-address "$BRIDGE" --advertise-address "$BRIDGE" --secure-port "$API_PORT" --insecure-port 0 \
  --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --client-ca-file "$pki/ca.crt" --token-auth-file "$pki/tokens.csv" \
  --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
  --service-cluster-ip-range 10.0.0.0/24 \
  --service-account-issuer https://kubernetes.default.svc \
  --service-account-key-file "$pki/sa.key" --service-account-signing-key-file "$pki/sa.key" \
  --kubelet-client-certificate "$pki/kubelet-client.crt" --kubelet-client-key "$pki/kubelet-client.key" \
  --kubelet-preferred-address-types InternalIP \
  --enable-aggregator-routing=true --allow-privileged=true \
  --enable-priority-and-fairness=false \
  --cert-dir "$STATE/apiserver-certs"
KUBECTL=(kubectl --kubeconfig "$STATE/kubeconfig.tmp" --request-timeout=10s)
wait_for kube-apiserver 180 "${KUBECTL[@]}" get --raw /readyz

start kube-controller-manager --kubeconfig "$pki/controller-manager.kubeconfig" \
  --bind-address 127.0.0.1 --port 0 --secure-port 0 --leader-elect=false \
  --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
  --use-service-account-credentials=false
start kube-scheduler --kubeconfig "$pki/scheduler.kubeconfig" \
  --bind-address 127.0.0.1 --port 0 --secure-port 0 --leader-elect=false

KROOT=$STATE/kubelet
mkdir -p "$KROOT"
start kubelet --kubeconfig "$pki/kubelet.kubeconfig" \
  --root-dir "$KROOT" --cert-dir "$KROOT/pki" --volume-plugin-dir "$KROOT/volume-plugins" \
  --hostname-override "$NODE_NAME" --node-ip "$BRIDGE" --address "$BRIDGE" --port "$(free_port "$BRIDGE")" \
  --read-only-port 0 --healthz-bind-address 127.0.0.1 --healthz-port "$(free_port 127.0.0.1)" \
  --anonymous-auth=false --client-ca-file "$pki/ca.crt" --authorization-mode AlwaysAllow \
  --container-runtime docker --docker-endpoint unix:///var/run/docker.sock \
  --pod-infra-container-image "$PAUSE_IMAGE" \
  --cgroup-driver cgroupfs --cgroups-per-qos=false --enforce-node-allocatable= \
  --fail-swap-on=false --oom-score-adj 0 --make-iptables-util-chains=false \
  --image-gc-high-threshold 100 --image-gc-low-threshold 99 \
  --eviction-hard 'memory.available<50Mi,nodefs.available<1%,imagefs.available<1%' \
  --v 2
wait_for "node $NODE_NAME" 120 "${KUBECTL[@]}" wait --for=condition=Ready "node/$NODE_NAME" --timeout=5s
# The default service account (its token is what the operator's Pods mount).
wait_for "service account default/default" 60 "${KUBECTL[@]}" get serviceaccount default
mv "$STATE/kubeconfig.tmp" "$STATE/kubeconfig"
cat >"$STATE/env" <<EOF
BRIDGE=$BRIDGE
API_PORT=$API_PORT
NODE_NAME=$NODE_NAME
PAUSE_IMAGE=$PAUSE_IMAGE
BUSYBOX_IMAGE=$BUSYBOX_IMAGE
EOF
log "node $NODE_NAME Ready after $(($(date +%s) - started)) s (kubeconfig: $STATE/kubeconfig)"
trap - EXIT
# The operator: a failure there leaves the cluster up (to look at); down.sh cleans.
exec "$(dirname "$0")/install-operator.sh"
