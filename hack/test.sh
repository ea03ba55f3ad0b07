#!/usr/bin/env bash
# The whole test suite, as CI runs it: set-up, lint, type check, unit tests,
# integration tests on the network-namespace bed (real Kamailio + sipp), and
# the end-to-end tests on a real kube-apiserver and a two-node Kubernetes.
# Needs root (namespaces).
#
# The Go builds the end-to-end tests need (Kubernetes, etcd, helm, CoreDNS,
# krew, MetalLB: about 18 minutes of both cores on a cold 2-core machine,
# nothing once cached) and the product's images run in the background at idle
# priority from the start:
# they take only the CPU that set-up, lint, types and the unit and integration
# tests leave (those tests wait on real processes much of the time), so the
# tests' timing is theirs. The end-to-end tests on a kube-apiserver alone start
# once its binaries are built (the nodes' binaries and MetalLB build on beside
# them), those on the two-node cluster once everything is built.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

work=$(mktemp -d) # the builds' logs and each test run's output
trap 'rm -rf "$work"' EXIT
# At idle (hack/lib/at-idle.sh): any test process that wants a CPU preempts the compilers at once.
. hack/lib/at-idle.sh
# First helm (an integration test renders the chart with it), then what the kube-apiserver
# tests need, then krew, then the nodes' binaries and MetalLB.
at_idle bash -c 'bash hack/build-k8s.sh helm && bash hack/build-k8s.sh control-plane && bash hack/build-krew.sh && bash hack/build-k8s.sh && bash hack/build-metallb.sh' >"$work/builds.log" 2>&1 &
builds=$!

bash hack/setup.sh
. hack/env.sh
# A cluster left by an interrupted run (its netns, mounts, cgroups, processes) would fail the
# cluster tests before they start ("already up"): take it down first, and say so.
if bash hack/cluster.sh is-up; then
  echo "== a two-node cluster is left from an interrupted run: hack/cluster.sh down"
  bash hack/cluster.sh down
fi
# The product's images (Debian packages, Node, the sources) for the cluster tests, the same way
# (hack/images.sh takes its own lock: a test that asks meanwhile waits for this build).
at_idle bash hack/images.sh build >"$work/images.log" 2>&1 &
images=$!

echo "== lint (biome)"
npx biome check .
echo "== type check (tsc)"
npx tsc -p tsconfig.json
echo "== promtool (from Debian's prometheus package, once, then cached)"
bash hack/build-promtool.sh

# node --test sorts its files by path: the tests that need no Go build run first.
tests() {
  local name=$1
  shift
  node --expose-gc --test --test-concurrency=1 --test-timeout=900000 "$@" 2>&1 | tee "$work/$name"
}
builds_failed() {
  cat "$work/builds.log"
  echo "== the Go builds failed" >&2
  exit 1
}
rc=0
echo "== unit and integration tests (the Go builds go on at idle priority meanwhile)"
tests first 'test/unit/**/*.test.ts' 'test/integration/**/*.test.ts' || rc=1

# The end-to-end files that bring up the two-node cluster, and the rest (a kube-apiserver alone).
mapfile -t cluster_tests < <(grep -l "from '../lib/cluster.ts'" test/e2e/*.test.ts)
mapfile -t api_tests < <(grep -L "from '../lib/cluster.ts'" test/e2e/*.test.ts)

echo "== Go builds: kube-apiserver, kube-controller-manager, kubectl, etcd, helm (from Go modules once, then cached)"
waited=$(date +%s)
# Waits on the background build's lock (or builds them, should that build have failed).
bash hack/build-k8s.sh control-plane >/dev/null 2>>"$work/builds.log" || builds_failed
echo "== waited $(($(date +%s) - waited)) s for them after the first tests"

echo "== end-to-end tests on a real kube-apiserver (krew, the nodes' binaries and MetalLB build on meanwhile)"
tests e2e-api "${api_tests[@]}" || rc=1

echo "== Go builds: krew, kubelet, kube-scheduler, kube-proxy, CoreDNS, MetalLB; images"
waited=$(date +%s)
wait "$builds" || builds_failed
grep -E '^build-[a-z0-9]+: (building|done|built)' "$work/builds.log" || true
if ! wait "$images"; then
  cat "$work/images.log"
  echo "== hack/images.sh failed in the background; the cluster tests build the images again" >&2
fi
echo "== waited $(($(date +%s) - waited)) s for the Go builds and the images"

echo "== end-to-end tests: the product as pods on a two-node cluster"
tests e2e-cluster "${cluster_tests[@]}" || rc=1

# One line that counts every test of the three runs.
sum() { awk -v k="$1" '$1 == "ℹ" && $2 == k { n += $3 } END { print n + 0 }' "$work/first" "$work/e2e-api" "$work/e2e-cluster"; }
echo "== all tests: $(sum tests) tests, $(sum pass) passed, $(sum fail) failed, $(sum cancelled) cancelled"
echo "== test suite took $(($(date +%s) - started)) s"
exit "$rc"
