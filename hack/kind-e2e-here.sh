#!/usr/bin/env bash
# Runs hack/kind-e2e.sh, unchanged, on this machine, which has no Docker engine:
# the `docker`, `kind`, `kubectl` and `helm` it calls are the shims in
# hack/kind-shim/, answered by hack/cluster.sh's two-node cluster (real kubelets
# and containerd), hack/images.sh's images and client hosts on the nodes' bridge.
# What runs for real is everything of the script but Docker and kind themselves:
# the helm install, the example applied, the waits, 1000 registrations and calls
# by sipp, each fault and each check after it. What it cannot show: kind's own
# networking and node containers, the Dockerfiles' builds (test/unit/images.test.ts
# keeps them in step with hack/images.sh).
#
#   hack/kind-e2e-here.sh      (root; the cluster must be down; it is taken down after)
set -euo pipefail
cd "$(dirname "$0")/.."
export KIND_SHIM_STATE=/tmp/sipha-kind-shim
if bash hack/cluster.sh status >/dev/null 2>&1; then
  echo "kind-e2e-here: a cluster of hack/cluster.sh is up already; take it down first" >&2
  exit 1
fi
cleanup() {
  local f
  for f in "$KIND_SHIM_STATE"/*.pid; do
    [ -f "$f" ] && kill -KILL -- "-$(cat "$f")" 2>/dev/null || true
  done
  # Every client host the docker shim made (its netns names: sipha-kind-NAME).
  for ns in /run/netns/sipha-kind-*; do
    [ -e "$ns" ] || continue
    ip netns del "${ns##*/}" 2>/dev/null || true
    rm -rf "/etc/netns/${ns##*/}"
  done
  rm -rf "$KIND_SHIM_STATE"
  [ "${SIPHA_KEEP_CLUSTER:-}" = 1 ] || bash hack/cluster.sh down
}
trap cleanup EXIT
PATH="$PWD/hack/kind-shim:$PATH" bash hack/kind-e2e.sh sipha
