#!/usr/bin/env bash
# End-to-end on kind, for machines with a Docker engine: the same steps as
# test/e2e/cluster.test.ts (which runs in `npm test` on a two-node cluster of
# real kubelets that hack/cluster.sh makes without Docker; docs/cluster.md).
#
#   1. the operator, sidecar and Kamailio images, built with Docker and loaded
#      into a kind cluster with two workers (the pair needs two nodes);
#   2. helm install of the chart; the example pair in arp mode, its VIP taken
#      from kind's Docker network;
#   3. 1000 users registered over the VIP by sipp in a container on that
#      network, and a call;
#   4. faults, each from a settled pair, each followed by: the backup is master,
#      the pair settles again, 1000 registrations on the master, a call works:
#        kamailio-kill   kill -9 of the master's Kamailio
#        pod-delete      kubectl delete pod of the master (graceful: a switchover)
#        sidecar-kill    kill -9 of the master's sidecar (the kubelet restarts it)
#        node-crash      the master's node stopped (docker stop), then started
#        operator-delete the operator's pods deleted during a Kamailio kill
#
#   hack/kind-e2e.sh [cluster-name]     (needs docker, kind, kubectl, helm on PATH)
#
# Leaves the cluster up for a look; delete it with: kind delete cluster --name NAME.
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:-sipha}
for t in docker kind kubectl helm; do command -v "$t" >/dev/null || { echo "kind-e2e: $t is required" >&2; exit 1; }; done
docker info >/dev/null 2>&1 || { echo "kind-e2e: no Docker engine answers" >&2; exit 1; }
say() { echo "kind-e2e: $*" >&2; }
die() { say "FAILED: $*"; exit 1; }
NS=sip
PAIR=sip-edge
USERS=1000

# --- images and cluster --------------------------------------------------------
docker build -f operator/Dockerfile -t docker.io/sipha/operator:0.1.0 .
docker build -f sidecar/Dockerfile -t docker.io/sipha/sidecar:0.1.0 .
docker build -f images/kamailio/Dockerfile -t docker.io/sipha/kamailio:5.6.3 .
# The SIP clients: Debian's sipp, on kind's network.
docker build -t sipha/sipp:e2e - <<'DOCKERFILE'
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends sip-tester && rm -rf /var/lib/apt/lists/*
DOCKERFILE

if ! kind get clusters | grep -qx "$name"; then
  kind create cluster --name "$name" --config - <<'CFG'
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
  - role: worker
  - role: worker
CFG
fi
kubectl config use-context "kind-$name" >/dev/null
kind load docker-image --name "$name" docker.io/sipha/operator:0.1.0 docker.io/sipha/sidecar:0.1.0 docker.io/sipha/kamailio:5.6.3

# The VIP: an address of kind's IPv4 subnet far above what Docker hands out to the nodes.
subnet=$(docker network inspect kind -f '{{range .IPAM.Config}}{{.Subnet}} {{end}}' | tr ' ' '\n' | grep -m1 '\.')
[ -n "$subnet" ] || die "no IPv4 subnet on the kind network"
base=${subnet%.*/*}
VIP="$base.250"
say "VIP $VIP (kind network $subnet)"

# --- install --------------------------------------------------------------------
helm upgrade --install sipha charts/sipha --namespace sipha-system --create-namespace --wait --timeout 180s
kubectl get namespace "$NS" >/dev/null 2>&1 || kubectl create namespace "$NS"
kubectl -n "$NS" create configmap kamailio-config --from-file=examples/kamailio/kamailio.cfg --dry-run=client -o yaml |
  kubectl -n "$NS" apply -f -
sed "s/address: 198.18.0.100/address: $VIP/" examples/siphapair.yaml | kubectl -n "$NS" apply -f -

role_pod() { # ROLE: the pod labelled with it (empty if none or several)
  local p
  p=$(kubectl -n "$NS" get pods -l "sipha.io/pair=$PAIR,sipha.io/role=$1" -o name)
  [ "$(echo "$p" | grep -c .)" = 1 ] && echo "${p#pod/}"
}
settled() { # one master, one backup, both Ready, phase Replicating, Ready condition True
  local phase ready
  [ -n "$(role_pod master)" ] && [ -n "$(role_pod backup)" ] || return 1
  phase=$(kubectl -n "$NS" get shp "$PAIR" -o jsonpath='{.status.phase}')
  ready=$(kubectl -n "$NS" get shp "$PAIR" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')
  [ "$phase" = Replicating ] && [ "$ready" = True ] &&
    kubectl -n "$NS" wait --for=condition=Ready pod -l "sipha.io/pair=$PAIR" --timeout=1s >/dev/null 2>&1
}
wait_until() { # SECONDS WHAT CMD...
  local s=$1 what=$2
  shift 2
  for _ in $(seq "$s"); do "$@" && return 0; sleep 1; done
  kubectl -n "$NS" get pods -o wide >&2 || true
  kubectl -n "$NS" describe shp "$PAIR" | sed -n '/Events:/,$p' >&2 || true
  die "$what (waited $s s)"
}
wait_until 180 "the pair is Ready" settled
kubectl -n "$NS" get shp "$PAIR"

# --- SIP clients ------------------------------------------------------------------
work=$(mktemp -d)
trap 'rm -rf "$work"; docker rm -f sipha-e2e-uas >/dev/null 2>&1 || true' EXIT
cp test/sipp/*.xml "$work/"
{
  echo SEQUENTIAL
  for i in $(seq "$USERS"); do echo "user$i"; done
} >"$work/users.csv"
printf 'SEQUENTIAL\nuas\n' >"$work/uas.csv"
sipp_run() { # sipp ARGS... (in a container on kind's network; scenarios in /w)
  docker run --rm --network kind -v "$work:/w" -w /w sipha/sipp:e2e sipp "$VIP:5060" -nostdin -timeout 60s -timeout_error "$@"
}
sipp_run -sf register.xml -inf users.csv -m "$USERS" -r 200 -l "$USERS" >/dev/null || die "registering $USERS users"
# The called party registers as "uas" and answers calls, in its own container.
docker rm -f sipha-e2e-uas >/dev/null 2>&1 || true
docker run -d --name sipha-e2e-uas --network kind -v "$work:/w" -w /w sipha/sipp:e2e \
  sh -c "sipp $VIP:5060 -sf register.xml -inf uas.csv -m 1 -nostdin && exec sipp -sf uas-call.xml -nostdin -p 5060" >/dev/null
call() { sipp_run -sf uac-call.xml -s uas -m 1 -d 500 -p 5080 >/dev/null; }
wait_until 30 "a call through the VIP" call

registered_on() { # POD: registered users in its Kamailio
  kubectl -n "$NS" exec "$1" -c sip-server -- kamcmd -s unix:/run/kamailio/kamailio_ctl stats.get_statistics usrloc: |
    awk -F' = ' '$1 ~ /usrloc:registered_users$/ { print $2 }'
}
node_of() { kubectl -n "$NS" get pod "$1" -o jsonpath='{.spec.nodeName}'; }
role_of() { kubectl -n "$NS" get pod "$1" -o jsonpath='{.metadata.labels.sipha\.io/role}'; }

# --- faults ---------------------------------------------------------------------
fault() { # NAME: one fault on the master of a settled pair, and the checks after it
  local f=$1 master backup node started
  wait_until 180 "the pair settles before $f" settled
  master=$(role_pod master)
  backup=$(role_pod backup)
  node=$(node_of "$master")
  say "$f: master $master on $node, backup $backup"
  started=$(date +%s%N)
  case $f in
    kamailio-kill) docker exec "$node" pkill -KILL -x kamailio ;;
    pod-delete) kubectl -n "$NS" delete pod "$master" --wait=false ;;
    sidecar-kill) docker exec "$node" pkill -KILL -f sidecar/src/main.ts ;;
    node-crash) docker stop "$node" >/dev/null ;;
    operator-delete)
      kubectl -n sipha-system delete pod -l app.kubernetes.io/name=sipha-operator --wait=false
      docker exec "$node" pkill -KILL -x kamailio
      ;;
  esac
  # The backup serves: the first OPTIONS answered through the VIP.
  wait_until 30 "$f: an answer through the VIP" sipp_run -sf options.xml -m 1 -r 1
  say "$f: answered through the VIP after about $((($(date +%s%N) - started) / 1000000)) ms (sipp's start included)"
  # The backup's own label: a crashed node's pod keeps saying master until the operator fences it.
  wait_until 60 "$f: $backup is master" test "$(role_of "$backup")" = master
  [ "$f" != node-crash ] || docker start "$node" >/dev/null
  wait_until 300 "$f: the pair settles again" settled
  # The users and the called party ("uas"), on both sides.
  local n registered=$((USERS + 1))
  n=$(registered_on "$(role_pod master)")
  [ "$n" = "$registered" ] || die "$f: $n of $registered registrations on the new master"
  n=$(registered_on "$(role_pod backup)")
  [ "$n" = "$registered" ] || die "$f: $n of $registered registrations on the rejoined backup"
  wait_until 30 "$f: a call after the fault" call
  kubectl -n "$NS" describe shp "$PAIR" | sed -n '/Events:/,$p' | tail -n 6
  say "$f: passed"
}
for f in kamailio-kill pod-delete sidecar-kill node-crash operator-delete; do fault "$f"; done
kubectl -n "$NS" get shp "$PAIR"
say "all faults passed; the cluster '$name' stays up: kind delete cluster --name $name"
