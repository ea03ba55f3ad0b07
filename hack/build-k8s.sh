#!/usr/bin/env bash
# Builds the control-plane binaries the operator tests run against, from Go
# modules (no prebuilt downloads): kube-apiserver, kube-controller-manager,
# kubectl and (for hack/cluster.sh's nodes) kubelet, kube-scheduler and
# kube-proxy from k8s.io/kubernetes, etcd from go.etcd.io/etcd/server/v3, helm
# from helm.sh/helm/v3, and CoreDNS (the cluster's DNS) from
# github.com/coredns/coredns. Cached outside the repo, keyed by version; only
# missing binaries are built, so a second run only checks the cache. Prints the
# bin directory on its last line.
#
# `build-k8s.sh helm` builds only helm (an integration test renders the chart's
# alert rules); `build-k8s.sh control-plane` only what a kube-apiserver test
# needs (kube-apiserver, kube-controller-manager, kubectl, etcd, helm):
# hack/test.sh builds them in that order and starts those tests while the rest
# still builds.
#
# Kubernetes and etcd each from its own module, at the versions its project
# pins (helm and CoreDNS share one, below). One module for
# all four halves the cold build (516 s instead of 953 s: they share client-go,
# gRPC, protobuf, the etcd client, each at another version), but Go's version
# selection then moves Kubernetes' own dependencies forward (gRPC 1.79 -> 1.83,
# etcd client 3.6.8 -> 3.6.16, ...), and on the test cluster a Kamailio kill's
# gap as pods went from p50 48-61 ms to 92-95 ms, runs interleaved (session 16,
# docs/development.md). The binaries the figures are measured with stay these.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.36.3}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
HELM_VERSION=${HELM_VERSION:-v3.22.0}
COREDNS_VERSION=${COREDNS_VERSION:-v1.14.7}
CACHE=${SIPHA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sipha}
BIN="$CACHE/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION/bin"
# The directory name predates the node binaries; it stays so existing caches
# stay valid (the k8s version still keys them; CoreDNS's version is in its name).
cp_cmds=(kube-apiserver kube-controller-manager kubectl)
case ${1:-all} in
  helm)
    k8s_cmds=()
    want=(helm)
    ;;
  control-plane)
    k8s_cmds=("${cp_cmds[@]}")
    want=("${k8s_cmds[@]}" etcd helm)
    ;;
  all)
    k8s_cmds=("${cp_cmds[@]}" kubelet kube-scheduler kube-proxy)
    want=("${k8s_cmds[@]}" etcd helm "coredns-$COREDNS_VERSION")
    ;;
  *) echo "usage: build-k8s.sh [helm|control-plane|all]" >&2; exit 2 ;;
esac

have_all() { for b in "${want[@]}"; do [ -x "$BIN/$b" ] || return 1; done; }
# A binary this call wants that the cache lacks.
to_build() { [[ " ${want[*]} " == *" $1 "* ]] && [ ! -x "$BIN/$1" ]; }
. "$(dirname "${BASH_SOURCE[0]}")/lib/build-lock.sh"
if cached_or_locked k8s have_all; then echo "$BIN"; exit 0; fi

command -v go >/dev/null || { echo "build-k8s: the Go toolchain is needed (go not on PATH)" >&2; exit 1; }
mkdir -p "$BIN"
export GOFLAGS="-trimpath -buildvcs=false" CGO_ENABLED=0
ldflags="-s -w"
start=$(date +%s)
log() { echo "build-k8s: $* ($(( $(date +%s) - start )) s)" >&2; }

# k8s.io/kubernetes cannot be `go install`ed: its go.mod points the k8s.io/*
# staging modules at ./staging. A scratch module requires it and replaces each
# staging module with its published v0.X.Y twin.
missing=()
for cmd in "${k8s_cmds[@]}"; do [ -x "$BIN/$cmd" ] || missing+=("$cmd"); done
if [ ${#missing[@]} -gt 0 ]; then
  work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
  cd "$work"
  modjson=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION")
  gomod=$(printf '%s' "$modjson" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  staging_ver="v0.${K8S_VERSION#v1.}"
  {
    echo "module sipha.local/k8sbuild"
    echo "go $(sed -n 's/^go \([0-9.]*\).*/\1/p' "$gomod")"
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo "replace ("
    sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\t\1 => \1 '"$staging_ver"'#p' "$gomod"
    echo ")"
  } > go.mod
  cat > tools.go <<'GO'
//go:build tools
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
)
GO
  log "resolving k8s.io/kubernetes $K8S_VERSION"
  go mod tidy -e >/dev/null 2>&1 || true
  go get "k8s.io/kubernetes@$K8S_VERSION" >/dev/null
  for cmd in "${missing[@]}"; do
    log "building $cmd"
    go build -tags tools -ldflags "$ldflags -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION" -o "$BIN/$cmd" "k8s.io/kubernetes/cmd/$cmd"
  done
  cd - >/dev/null; rm -rf "$work"; trap - EXIT
fi

# etcd's root module also uses local replaces; build its server from a 3-line main.
if to_build etcd; then
  work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
  cd "$work"
  go mod init sipha.local/etcdbuild >/dev/null 2>&1
  cat > main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  log "building etcd $ETCD_VERSION"
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null 2>&1
  go mod tidy >/dev/null 2>&1
  go build -ldflags "$ldflags" -o "$BIN/etcd" .
  cd - >/dev/null; rm -rf "$work"; trap - EXIT
fi

# helm and CoreDNS from one scratch module: neither is on a path a failover
# takes, and they share client-go, gRPC and protobuf, which built one by one
# compile twice (cold, alone: 153 s instead of 239). CoreDNS: a main with only
# the plugins hack/cluster/coredns.yaml's Corefile uses (CoreDNS's documented
# way to build a custom set; its own main compiles every plugin with the cloud
# SDKs: 3.8 min cold on 2 cores, vs 2.4).
if to_build helm || to_build "coredns-$COREDNS_VERSION"; then
  work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
  cd "$work"
  go mod init sipha.local/toolsbuild >/dev/null 2>&1
  mkdir coredns
  cat > coredns/main.go <<'GO'
package main

import (
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"

	"github.com/coredns/coredns/coremain"
)

func main() { coremain.Run() }
GO
  printf '//go:build tools\npackage tools\n\nimport _ "helm.sh/helm/v3/cmd/helm"\n' > tools.go
  log "resolving helm $HELM_VERSION and coredns $COREDNS_VERSION (one module)"
  go get "helm.sh/helm/v3@$HELM_VERSION" "github.com/coredns/coredns@$COREDNS_VERSION" >/dev/null 2>&1
  go mod tidy -e >/dev/null 2>&1 || true
  if to_build helm; then
    log "building helm $HELM_VERSION"
    go build -tags tools -ldflags "$ldflags -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" -o "$BIN/helm" helm.sh/helm/v3/cmd/helm
  fi
  if to_build "coredns-$COREDNS_VERSION"; then
    log "building coredns $COREDNS_VERSION"
    go build -ldflags "$ldflags" -o "$BIN/coredns-$COREDNS_VERSION" ./coredns
  fi
  cd - >/dev/null; rm -rf "$work"; trap - EXIT
fi

have_all || { echo "build-k8s: some binaries are missing in $BIN" >&2; exit 1; }
log "done: $(du -sh "$BIN" | cut -f1) in $BIN"
echo "$BIN"
