#!/usr/bin/env bash
# Installs the operator into the cluster of scripts/cluster/up.sh with `kubectl apply -k` of an
# overlay of deploy/operator written to $STATE/overlay, and waits until its Pods are Ready.
# The overlay changes only what this node needs: the locally built image, never pulled
# (imagePullPolicy: Never), and KUBERNETES_SERVICE_HOST/PORT = the API server's bridge address,
# because there is no kube-proxy to carry the Service IP (see up.sh). RBAC, the webhook, the
# Service and the Deployment are deploy/operator's own.
# Usage: scripts/cluster/install-operator.sh   (up.sh runs it)
source "$(dirname "$0")/common.sh"
# shellcheck disable=SC1091
source "$STATE/env"
IMAGE=${IMAGE:-volume-syncing-operator:dev}
mkdir -p "$STATE/overlay"
base=$(python3 -c 'import os,sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' "$ROOT/deploy/operator" "$STATE/overlay")
cat >"$STATE/overlay/kustomization.yaml" <<EOF
# Written by scripts/cluster/install-operator.sh: deploy/operator on the test node.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $base
images:
  - name: volume-syncing-operator
    newName: ${IMAGE%:*}
    newTag: ${IMAGE##*:}
patches:
  - target:
      kind: Deployment
      name: volume-syncing-operator
    patch: |-
      apiVersion: apps/v1
      kind: Deployment
      metadata:
        name: volume-syncing-operator
        namespace: volume-syncing-operator
      spec:
        template:
          spec:
            containers:
              - name: operator
                imagePullPolicy: Never
                env:
                  - name: VSO_IMAGE
                    value: $IMAGE
                  - name: KUBERNETES_SERVICE_HOST
                    value: "$BRIDGE"
                  - name: KUBERNETES_SERVICE_PORT
                    value: "$API_PORT"
EOF
KUBECTL=(kubectl --kubeconfig "$STATE/kubeconfig" --request-timeout=30s)
started=$(date +%s)
"${KUBECTL[@]}" apply -k "$STATE/overlay" >&2
"${KUBECTL[@]}" -n volume-syncing-operator rollout status deployment/volume-syncing-operator --timeout=180s >&2 || {
  "${KUBECTL[@]}" -n volume-syncing-operator get pods -o wide >&2 || true
  "${KUBECTL[@]}" -n volume-syncing-operator describe pods >&2 || true
  die "the operator's Pods did not become Ready"
}
log "operator Ready $(($(date +%s) - started)) s after kubectl apply -k"
