#!/usr/bin/env bash
# The whole test suite, as CI runs it: set-up, lint, type check, unit tests,
# integration tests on the network-namespace bed (real Kamailio + sipp), and
# the operator's tests on a real kube-apiserver. Needs root (namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/setup.sh
. hack/env.sh
started=$(date +%s)

echo "== lint (biome)"
npx biome check .
echo "== type check (tsc)"
npx tsc -p tsconfig.json
echo "== Kubernetes binaries (built from Go modules once, then cached)"
bash hack/build-k8s.sh
echo "== promtool (from Debian's prometheus package, once, then cached)"
bash hack/build-promtool.sh
echo "== MetalLB for the metallb-mode e2e (built from its Go module once, then cached)"
bash hack/build-metallb.sh
echo "== tests"
# One node --test run so one closing summary counts every test.
node --expose-gc --test --test-concurrency=1 --test-timeout=900000 \
  'test/unit/**/*.test.ts' 'test/integration/**/*.test.ts' 'test/e2e/**/*.test.ts'
echo "== test suite took $(( $(date +%s) - started )) s"
