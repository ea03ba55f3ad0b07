#!/usr/bin/env bash
# Builds krew (as the kubectl plugin kubectl-krew) and krew's own manifest
# checker, validate-krew-manifest, from the Go module sigs.k8s.io/krew, so the
# plugin's krew manifest and archive are checked by the tools krew's index
# uses. v0.4.3: the newest version the module proxy serves here. Cached outside
# the repo, keyed by version; prints the bin directory on its last line.
set -euo pipefail

KREW_VERSION=${KREW_VERSION:-v0.4.3}
CACHE=${SIPHA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sipha}
BIN="$CACHE/krew-$KREW_VERSION/bin"
have_all() { [ -x "$BIN/kubectl-krew" ] && [ -x "$BIN/validate-krew-manifest" ]; }
. "$(dirname "${BASH_SOURCE[0]}")/lib/build-lock.sh"
if cached_or_locked krew have_all; then echo "$BIN"; exit 0; fi

command -v go >/dev/null || { echo "build-krew: the Go toolchain is needed (go not on PATH)" >&2; exit 1; }
mkdir -p "$BIN"
export GOFLAGS="-trimpath -buildvcs=false -mod=mod" CGO_ENABLED=0 GOBIN="$BIN"
go install -ldflags="-s -w" "sigs.k8s.io/krew/cmd/krew@$KREW_VERSION" "sigs.k8s.io/krew/cmd/validate-krew-manifest@$KREW_VERSION" >&2
mv "$BIN/krew" "$BIN/kubectl-krew"
echo "$BIN"
