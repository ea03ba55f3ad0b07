#!/usr/bin/env bash
# End-to-end on kind, for machines with a Docker engine (it cannot run on the
# project's CI machines, which have none: there the operator is tested against a
# real kube-apiserver + etcd + kube-controller-manager, see test/e2e/).
#
# Builds the operator and sidecar images, creates a kind cluster with two
# workers (the pair's pods need two nodes: required anti-affinity), loads the
# images, installs the chart and applies examples/siphapair.yaml.
#
#   hack/kind-e2e.sh [cluster-name]     (needs docker, kind, kubectl, helm on PATH)
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:-sipha}
for t in docker kind kubectl helm; do command -v "$t" >/dev/null || { echo "kind-e2e: $t is required" >&2; exit 1; }; done
docker info >/dev/null 2>&1 || { echo "kind-e2e: no Docker engine answers" >&2; exit 1; }

docker build -f operator/Dockerfile -t sipha/operator:0.1.0 .
docker build -f sidecar/Dockerfile -t sipha/sidecar:0.1.0 .

if ! kind get clusters | grep -qx "$name"; then
  cat <<'CFG' | kind create cluster --name "$name" --config -
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
  - role: worker
  - role: worker
CFG
fi
kind load docker-image --name "$name" sipha/operator:0.1.0 sipha/sidecar:0.1.0

helm upgrade --install sipha charts/sipha --namespace sipha-system --create-namespace --wait
kubectl create configmap kamailio-config --from-file=examples/kamailio/kamailio.cfg --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -f examples/siphapair.yaml
kubectl wait --for=jsonpath='{.status.phase}'=Pending shp/sip-edge --timeout=60s || true
kubectl get shp
kubectl describe shp sip-edge | sed -n '/Events:/,$p'
echo "kind-e2e: cluster '$name' is up; delete it with: kind delete cluster --name $name"
