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
# All of them come from ONE scratch module and one `go build`: each project pins
# its own client-go, gRPC, protobuf, Prometheus client and etcd client, so built
# one by one the same large packages compiled up to four times (k8s.io/api alone
# is minutes on 2 cores). In one module Go's version selection gives them one
# version of each, compiled once. Helm is the release built on Kubernetes 1.36's
# libraries (v3.21: v3.22 moved to 1.37's); CoreDNS and etcd take the newer
# common versions (patch and minor steps of stable APIs).
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.36.3}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
HELM_VERSION=${HELM_VERSION:-v3.21.4}
COREDNS_VERSION=${COREDNS_VERSION:-v1.14.7}
CACHE=${SIPHA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sipha}
BIN="$CACHE/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION/bin"
# The directory name predates the node binaries; it stays so existing caches
# stay valid (the k8s version still keys them; CoreDNS's version is in its name).
k8s_cmds=(kube-apiserver kube-controller-manager kubectl kubelet kube-scheduler kube-proxy)
want=("${k8s_cmds[@]}" etcd helm "coredns-$COREDNS_VERSION")

have_all() { for b in "${want[@]}"; do [ -x "$BIN/$b" ] || return 1; done; }
. "$(dirname "${BASH_SOURCE[0]}")/lib/build-lock.sh"
if cached_or_locked k8s have_all; then echo "$BIN"; exit 0; fi

command -v go >/dev/null || { echo "build-k8s: the Go toolchain is needed (go not on PATH)" >&2; exit 1; }
mkdir -p "$BIN"
export GOFLAGS="-trimpath -buildvcs=false" CGO_ENABLED=0
start=$(date +%s)
log() { echo "build-k8s: $* ($(( $(date +%s) - start )) s)" >&2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
# k8s.io/kubernetes cannot be `go install`ed: its go.mod points the k8s.io/*
# staging modules at ./staging. The scratch module requires it and replaces each
# staging module with its published v0.X.Y twin (which also holds helm's and
# CoreDNS's k8s.io/* at Kubernetes' own version).
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
} >go.mod
cat >tools.go <<'GO'
//go:build tools

package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
GO
# etcd's root module uses local replaces too: its server from a 3-line main.
mkdir etcd coredns
cat >etcd/main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
# CoreDNS: a main with only the plugins hack/cluster/coredns.yaml's Corefile
# uses (CoreDNS's documented way to build a custom set). The module's own main
# compiles every plugin with the cloud SDKs.
cat >coredns/main.go <<'GO'
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
log "resolving k8s.io/kubernetes $K8S_VERSION, etcd $ETCD_VERSION, helm $HELM_VERSION, CoreDNS $COREDNS_VERSION"
go get "k8s.io/kubernetes@$K8S_VERSION" "go.etcd.io/etcd/server/v3@$ETCD_VERSION" \
  "helm.sh/helm/v3@$HELM_VERSION" "github.com/coredns/coredns@$COREDNS_VERSION" >/dev/null 2>&1
go mod tidy -e >/dev/null 2>&1 || true

# Only what is missing, in one build (one compile graph; the links run side by side).
pkgs=()
for cmd in "${k8s_cmds[@]}"; do [ -x "$BIN/$cmd" ] || pkgs+=("k8s.io/kubernetes/cmd/$cmd"); done
[ -x "$BIN/helm" ] || pkgs+=(helm.sh/helm/v3/cmd/helm)
[ -x "$BIN/etcd" ] || pkgs+=(./etcd)
[ -x "$BIN/coredns-$COREDNS_VERSION" ] || pkgs+=(./coredns)
log "building ${pkgs[*]##*/}"
out="$work/out"
mkdir "$out"
go build -tags tools -o "$out/" \
  -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
  "${pkgs[@]}"
[ ! -e "$out/coredns" ] || mv "$out/coredns" "$out/coredns-$COREDNS_VERSION"
mv "$out"/* "$BIN/"
cd /
have_all || { echo "build-k8s: some binaries are missing in $BIN" >&2; exit 1; }
log "done: $(du -sh "$BIN" | cut -f1) in $BIN"
echo "$BIN"
