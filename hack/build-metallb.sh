#!/usr/bin/env bash
# Builds MetalLB (L2 mode only, no FRR) for the two-node cluster of
# hack/cluster.sh, from its Go module (no prebuilt images, no registry):
#   bin/controller, bin/speaker       static binaries (CGO off)
#   images/metallb-{controller,speaker}.tar
#                                     one-layer OCI archives (hack/cluster/oci-image.sh),
#                                     sipha.local/metallb-{controller,speaker}:$METALLB_VERSION
#   metallb.yaml                      the module's config/manifests/metallb-native.yaml
#                                     with those images and the webhooks off (below)
# cached in $SIPHA_CACHE/metallb-$METALLB_VERSION/; a second run only checks
# the cache. Prints that directory on its last line.
#
# Version: v0.15.2. The Go module proxy serves go.universe.tf/metallb v0.16.2
# too, but not the github.com/metallb/frr-k8s v0.0.27 it requires (403), and
# v0.16.2 does not compile against the frr-k8s the proxy has (v0.0.17, v0.0.18,
# v0.0.21: its FRR-k8s BGP code uses AsPathPrependPrefixes, added later).
# v0.15.2 requires frr-k8s v0.0.20 (not served either) and compiles against
# v0.0.21 (replaced below). FRR-k8s is BGP only: the L2 path never runs it.
#
# Webhooks off: the controller runs with --webhook-mode=disabled and
# --disable-cert-rotation, the ValidatingWebhookConfiguration is dropped, and
# the BGPPeer CRD's conversion webhook becomes `strategy: None` (its v1beta1 and
# v1beta2 are only converted for BGP peers; this install has none). What that
# costs: IPAddressPool / L2Advertisement objects are not validated at admission
# (a bad pool is reported in the controller's log and the objects' status instead).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

METALLB_VERSION=${METALLB_VERSION:-v0.15.2}
FRR_K8S_REPLACE=${FRR_K8S_REPLACE:-v0.0.21}
CACHE=${SIPHA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sipha}
OUT="$CACHE/metallb-$METALLB_VERSION"
CONTROLLER_IMAGE=sipha.local/metallb-controller:$METALLB_VERSION
SPEAKER_IMAGE=sipha.local/metallb-speaker:$METALLB_VERSION
want=(bin/controller bin/speaker images/metallb-controller.tar images/metallb-speaker.tar metallb.yaml)

have_all() { for f in "${want[@]}"; do [ -s "$OUT/$f" ] || return 1; done; }
. "$ROOT/hack/lib/build-lock.sh"
if cached_or_locked metallb have_all; then
  echo "$OUT"
  exit 0
fi

command -v go >/dev/null || {
  echo "build-metallb: the Go toolchain is needed (go not on PATH)" >&2
  exit 1
}
start=$(date +%s)
log() { echo "build-metallb: $* ($(($(date +%s) - start)) s)" >&2; }
mkdir -p "$OUT/bin" "$OUT/images"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A scratch module that requires MetalLB's (its go.mod has no local replaces).
# GOTOOLCHAIN=local: build with the Go on PATH, never fetch another toolchain.
export GOFLAGS="-mod=mod -trimpath -buildvcs=false" CGO_ENABLED=0 GOTOOLCHAIN=local
(
  cd "$work"
  cat >go.mod <<EOF
module sipha.local/metallbbuild

go 1.24.0

require go.universe.tf/metallb $METALLB_VERSION

replace github.com/metallb/frr-k8s => github.com/metallb/frr-k8s $FRR_K8S_REPLACE
EOF
  for cmd in controller speaker; do
    [ -s "$OUT/bin/$cmd" ] && continue
    log "building $cmd (go.universe.tf/metallb $METALLB_VERSION)"
    go build -ldflags "-s -w" -o "$OUT/bin/$cmd.tmp" "go.universe.tf/metallb/$cmd"
    mv "$OUT/bin/$cmd.tmp" "$OUT/bin/$cmd"
  done
)
src=$(cd "$work" && go list -m -f '{{.Dir}}' go.universe.tf/metallb)

# shellcheck source=hack/cluster/oci-image.sh
. "$ROOT/hack/cluster/oci-image.sh"
for cmd in controller speaker; do
  mkdir -p "$work/rootfs-$cmd/etc"
  cp "$OUT/bin/$cmd" "$work/rootfs-$cmd/$cmd"
  echo 'nobody:x:65534:65534:nobody:/:/sbin/nologin' >"$work/rootfs-$cmd/etc/passwd"
  ref=$CONTROLLER_IMAGE
  [ $cmd = speaker ] && ref=$SPEAKER_IMAGE
  oci_image "$ref" "$work/rootfs-$cmd" "$OUT/images/metallb-$cmd.tar.tmp" "/$cmd"
  mv "$OUT/images/metallb-$cmd.tar.tmp" "$OUT/images/metallb-$cmd.tar"
done

# The module's own native manifest, changed only where this install differs.
awk -v ctl="$CONTROLLER_IMAGE" -v spk="$SPEAKER_IMAGE" '
  function flush() { if (doc != "" && doc !~ /\nkind: ValidatingWebhookConfiguration\n/) printf "%s", doc; doc = "" }
  /^---$/ { flush(); doc = "---\n"; next }
  skip && /^  [a-z]/ && !/^  conversion:/ { skip = 0 }
  skip { next }
  /^  conversion:$/ { doc = doc "  conversion:\n    strategy: None\n"; skip = 1; next }
  /image: quay.io\/metallb\/controller:/ { sub(/quay.io\/metallb\/controller:.*/, ctl) }
  /image: quay.io\/metallb\/speaker:/ { sub(/quay.io\/metallb\/speaker:.*/, spk) }
  { doc = doc $0 "\n" }
  /^        - --tls-min-version=/ { doc = doc "        - --webhook-mode=disabled\n        - --disable-cert-rotation\n" }
  END { flush() }
' "$src/config/manifests/metallb-native.yaml" >"$OUT/metallb.yaml.tmp"
for must in "$CONTROLLER_IMAGE" "$SPEAKER_IMAGE" --webhook-mode=disabled "strategy: None"; do
  grep -qF -- "$must" "$OUT/metallb.yaml.tmp" || {
    echo "build-metallb: the manifest edit did not apply ($must missing); has metallb-native.yaml changed?" >&2
    exit 1
  }
done
! grep -q "ValidatingWebhookConfiguration\|quay.io" "$OUT/metallb.yaml.tmp" || {
  echo "build-metallb: webhook configuration or upstream images left in the manifest" >&2
  exit 1
}
mv "$OUT/metallb.yaml.tmp" "$OUT/metallb.yaml"
log "built in $OUT"
echo "$OUT"
