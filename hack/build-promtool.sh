#!/usr/bin/env bash
# Builds promtool (Prometheus's rule checker and rule unit-test runner) from its
# Go module, as hack/build-k8s.sh does for the Kubernetes binaries: no prebuilt
# download, cached outside the repo keyed by version, so only the first run
# builds. The observability test (test/integration/observability.test.ts) runs
# `promtool check rules` and `promtool test rules` on the chart's alerts.
# Prints the binary's path on its last line.
set -euo pipefail

# Prometheus 3.x is published as Go module versions v0.3XX.Y (v0.316.0 = 3.16.0).
PROMETHEUS_MODULE_VERSION=${PROMETHEUS_MODULE_VERSION:-v0.316.0}
CACHE=${SIPHA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sipha}
BIN="$CACHE/promtool-$PROMETHEUS_MODULE_VERSION/bin"
if [ -x "$BIN/promtool" ]; then echo "$BIN/promtool"; exit 0; fi

command -v go >/dev/null || { echo "build-promtool: the Go toolchain is needed (go not on PATH)" >&2; exit 1; }
mkdir -p "$BIN"
start=$(date +%s)
echo "build-promtool: building promtool $PROMETHEUS_MODULE_VERSION" >&2
release="3.${PROMETHEUS_MODULE_VERSION#v0.3}" # v0.316.0 -> 3.16.0 (the version promtool prints)
GOBIN="$BIN" GOFLAGS="-trimpath -buildvcs=false" CGO_ENABLED=0 \
  go install -ldflags "-s -w -X github.com/prometheus/common/version.Version=$release" \
  "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_MODULE_VERSION"
echo "build-promtool: done ($(( $(date +%s) - start )) s)" >&2
echo "$BIN/promtool"
