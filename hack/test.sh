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
# tests' timing is theirs. The end-to-end tests start once the builds are done.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

builds_log=$(mktemp)
out=$(mktemp -d)
trap 'rm -rf "$builds_log" "$out"' EXIT
# SCHED_IDLE: any test process that wants a CPU preempts the compilers at once.
chrt --idle 0 bash -c 'bash hack/build-k8s.sh && bash hack/build-krew.sh && bash hack/build-metallb.sh' >"$builds_log" 2>&1 &
builds=$!

bash hack/setup.sh
. hack/env.sh
# The product's images (Debian packages, Node, the sources) for the cluster tests, the same way
# (hack/images.sh takes its own lock: a test that asks meanwhile waits for this build).
images_log=$(mktemp)
trap 'rm -rf "$builds_log" "$out" "$images_log"' EXIT
chrt --idle 0 bash hack/images.sh build >"$images_log" 2>&1 &
images=$!

echo "== lint (biome)"
npx biome check .
echo "== type check (tsc)"
npx tsc -p tsconfig.json
echo "== promtool (from Debian's prometheus package, once, then cached)"
bash hack/build-promtool.sh

# node --test sorts its files by path: two runs put the tests that need no Go build first.
tests() {
  local name=$1
  shift
  node --expose-gc --test --test-concurrency=1 --test-timeout=900000 "$@" 2>&1 | tee "$out/$name"
}
rc=0
echo "== unit and integration tests (the Go builds go on at idle priority meanwhile)"
tests first 'test/unit/**/*.test.ts' 'test/integration/**/*.test.ts' || rc=1

echo "== Go builds: Kubernetes, etcd, helm, CoreDNS, krew, MetalLB (from Go modules once, then cached); images"
waited=$(date +%s)
if ! wait "$builds"; then
  cat "$builds_log"
  echo "== the Go builds failed" >&2
  exit 1
fi
grep -E '^build-[a-z0-9]+: (building|done|built)' "$builds_log" || true
if ! wait "$images"; then
  cat "$images_log"
  echo "== hack/images.sh failed in the background; the cluster tests build the images again" >&2
fi
echo "== waited $(($(date +%s) - waited)) s for the Go builds and the images after the first tests"

echo "== end-to-end tests (a real kube-apiserver; the product as pods on a two-node cluster)"
tests e2e 'test/e2e/**/*.test.ts' || rc=1

# One line that counts every test of both runs.
sum() { awk -v k="$1" '$1 == "ℹ" && $2 == k { n += $3 } END { print n + 0 }' "$out/first" "$out/e2e"; }
echo "== all tests: $(sum tests) tests, $(sum pass) passed, $(sum fail) failed, $(sum cancelled) cancelled"
echo "== test suite took $(($(date +%s) - started)) s"
exit "$rc"
