# shellcheck shell=bash
# oci_image: a one-layer OCI image archive from a directory, without Docker or
# a registry (importable with `ctr images import`). Sourced by hack/cluster.sh
# (pause, CoreDNS) and hack/build-metallb.sh (MetalLB's controller and speaker).
# Reproducible: sorted, owner 0, mtime 0, gzip -n.

oci_image() { # NAME ROOTFS OUT ENTRYPOINT...
  local name=$1 rootfs=$2 out=$3
  shift 3
  local w
  w=$(mktemp -d)
  mkdir -p "$w/blobs/sha256"
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$rootfs" -cf "$w/layer.tar" .
  local diffid layer lsize cfg csize man msize ep
  diffid=$(sha256sum "$w/layer.tar" | cut -d' ' -f1)
  gzip -n -1 "$w/layer.tar"
  layer=$(sha256sum "$w/layer.tar.gz" | cut -d' ' -f1)
  lsize=$(stat -c %s "$w/layer.tar.gz")
  mv "$w/layer.tar.gz" "$w/blobs/sha256/$layer"
  ep=$(printf '"%s",' "$@")
  printf '{"architecture":"amd64","os":"linux","config":{"Entrypoint":[%s],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "${ep%,}" "$diffid" >"$w/config"
  cfg=$(sha256sum "$w/config" | cut -d' ' -f1)
  csize=$(stat -c %s "$w/config")
  mv "$w/config" "$w/blobs/sha256/$cfg"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
    "$cfg" "$csize" "$layer" "$lsize" >"$w/manifest"
  man=$(sha256sum "$w/manifest" | cut -d' ' -f1)
  msize=$(stat -c %s "$w/manifest")
  mv "$w/manifest" "$w/blobs/sha256/$man"
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
    "$man" "$msize" "$name" "${name##*:}" >"$w/index.json"
  echo '{"imageLayoutVersion":"1.0.0"}' >"$w/oci-layout"
  tar -C "$w" -cf "$out" oci-layout index.json blobs
  rm -rf "$w"
}
