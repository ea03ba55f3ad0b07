#!/usr/bin/env bash
# Builds sipha's OCI images on this machine, without Docker or a registry, and
# imports them into a containerd. The Dockerfiles (sidecar/, operator/,
# images/kamailio/) describe the same images for Docker users; a unit test
# (test/unit/images.test.ts) keeps entrypoint, workdir, user and Debian
# packages the same on both sides.
#
#   hack/images.sh build                 builds what is missing; prints "<reference> <archive>" per image
#   hack/images.sh import SOCK [ARCHIVE...]
#                                        imports into that containerd's k8s.io namespace
#                                        (default: all three, built first when missing)
#
# The images (docs/images.md):
#   docker.io/sipha/operator:<version>   Node + /app (operator/src, contract/, production node_modules);
#                                        runs as 65532:65532
#   docker.io/sipha/sidecar:<version>    the same plus iproute2 and iputils-arping (arp VIP mode) and
#                                        nftables, conntrack (the LB modes' egress agent, same image);
#                                        runs as root: the VIP needs NET_ADMIN/NET_RAW, which a
#                                        non-root user would not get from added capabilities
#   docker.io/sipha/kamailio:5.6.3       Debian bookworm's kamailio package (its stock config at
#                                        /etc/kamailio/kamailio.cfg), `kamailio -DD -E`, as the
#                                        kamailio user (999:999): SIP's ports (5060, 5070...) are
#                                        above 1024, so binding them needs no privilege.
#
# Each root filesystem is Debian's Essential set plus only the packages listed
# below (mmdebstrap, no recommends, no docs, no apt); Node is the binary the
# repository uses (hack/env.sh). Layers are assembled with umoci and written as
# OCI archives to $SIPHA_CACHE/images/, keyed by a hash of everything that goes
# in (sources, package-lock.json, Node version, package lists, this script), so
# a second run only hashes and checks the cache. Sizes: $SIPHA_CACHE/images/sizes.json.
# shellcheck disable=SC2034,SC2016 # the image fields are read by name; hooks and node -e take literal $
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/env.sh

SUITE=bookworm
VERSION=$(sed -n 's/^  "version": "\([^"]*\)",$/\1/p' package.json)
KAMAILIO_VERSION=5.6.3
IMAGES=(operator sidecar kamailio)

# What the Node binary needs beyond the Essential set (node:*-slim images have it).
NODE_PACKAGES=(libstdc++6)

OPERATOR_REF=docker.io/sipha/operator:$VERSION
OPERATOR_PACKAGES=()
OPERATOR_ENTRYPOINT=(node operator/src/main.ts)
OPERATOR_CMD=()
OPERATOR_WORKDIR=/app
OPERATOR_USER=65532:65532

SIDECAR_REF=docker.io/sipha/sidecar:$VERSION
# arp mode: the VIP is added with iproute2 and announced with arping (sidecar/src/vip/arp.ts).
# Tickle ACKs at takeover (sidecar/src/vip/tcp-tickle.ts) go out through perl-base (Essential, always there).
# LB modes: the egress agent loads its SNAT with nft and forgets a dead pod's flows with
# conntrack (sidecar/src/egress/).
SIDECAR_PACKAGES=(iproute2 iputils-arping nftables conntrack)
# V8 flags as in sidecar/node-flags.json (test/unit/sidecar-image.test.ts).
SIDECAR_ENTRYPOINT=(node --initial-old-space-size=128 --max-semi-space-size=8 sidecar/src/main.ts)
SIDECAR_CMD=()
SIDECAR_WORKDIR=/app
SIDECAR_USER=

KAMAILIO_REF=docker.io/sipha/kamailio:$KAMAILIO_VERSION
# Every module examples/kamailio/kamailio.cfg loads is in the kamailio package (checked at
# build); netbase: /etc/protocols, without which Kamailio cannot start its TCP listeners.
KAMAILIO_PACKAGES=(kamailio netbase)
KAMAILIO_ENTRYPOINT=(kamailio)
KAMAILIO_CMD=(-DD -E)
KAMAILIO_WORKDIR=
KAMAILIO_USER=999:999

CACHE="$SIPHA_CACHE/images"
PATH_ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
start=$(date +%s)
log() { echo "images: $* ($(($(date +%s) - start)) s)" >&2; }
die() { echo "images: $*" >&2; exit 1; }

upper() { tr '[:lower:]' '[:upper:]' <<<"$1"; }
# var NAME FIELD -> the value of e.g. SIDECAR_REF; arr NAME FIELD -> e.g. SIDECAR_PACKAGES[@]
var() { local v; v="$(upper "$1")_$2"; printf '%s' "${!v}"; }
arr() {
  local name x
  name="$(upper "$1")_$2"
  local -n a=$name
  for x in "${a[@]}"; do printf '%s\n' "$x"; done
}

# The Debian packages an image gets on top of the Essential set.
packages() {
  if [ "$1" != kamailio ]; then printf '%s\n' "${NODE_PACKAGES[@]}"; fi
  arr "$1" PACKAGES
}

node_bin() { printf '%s' "$SIPHA_NODE_DIR/node_modules/node/bin/node"; }

# The files each image's /app holds, in a stable order.
app_files() {
  case $1 in
    operator | sidecar) find contract "$1/src" -type f | LC_ALL=C sort ;;
    kamailio) ;;
  esac
}

# Two cache levels. The base (the Debian root filesystem, and for the Node images Node
# and the production node_modules) is slow to build (mmdebstrap) and changes rarely; the
# image adds the app sources to it, in seconds. Keys are taken once per run (KEYS): a
# source edited during a build changes the next run's key.
declare -A BASE_KEYS=() KEYS=()
base_key() {
  {
    echo "$SUITE"
    sha256sum hack/images.sh
    if [ "$1" = kamailio ]; then
      sha256sum examples/kamailio/kamailio.cfg
    else
      echo "node $SIPHA_NODE_VERSION"
      sha256sum package.json package-lock.json
    fi
  } | sha256sum | cut -c1-16
}
key() {
  {
    echo "$VERSION $KAMAILIO_VERSION ${BASE_KEYS[$1]}"
    app_files "$1" | while IFS= read -r f; do sha256sum "$f"; done
  } | sha256sum | cut -c1-16
}
base_of() { printf '%s/base/%s-%s' "$CACHE" "$1" "${BASE_KEYS[$1]}"; }
archive_of() { printf '%s/%s-%s.oci.tar' "$CACHE" "$1" "${KEYS[$1]}"; }

need_root() { [ "$(id -u)" = 0 ] || die "run as root (mmdebstrap --mode=root chroots; ctr needs the socket)"; }

# Root filesystem: Debian's Essential set + the image's packages, as a tar.
rootfs() {
  local name=$1 out=$2 pkgs hooks=()
  pkgs=$(packages "$name" | paste -sd, -)
  if [ "$name" = kamailio ]; then
    # A fixed uid (Kubernetes' runAsNonRoot needs a numeric USER); the package's
    # postinst (adduser --system) keeps an existing kamailio user.
    hooks+=(--essential-hook='echo "kamailio:x:999:999:Kamailio SIP Server:/run/kamailio:/usr/sbin/nologin" >>"$1/etc/passwd"; echo "kamailio:x:999:" >>"$1/etc/group"')
    # The ctl socket (SIPHA_CTL) lives in /run/kamailio; mmdebstrap would empty /run.
    hooks+=(--skip=cleanup/run --customize-hook='install -d -o 999 -g 999 -m 0750 "$1/run/kamailio"')
    # Fail the build when the image cannot load the project's config or its own.
    hooks+=(--customize-hook='upload examples/kamailio/kamailio.cfg /tmp/sipha.cfg')
    hooks+=(--customize-hook='chroot "$1" sh -c "SIPHA_PUBLIC_IP=127.0.0.1 SIPHA_CTL=unix:/tmp/ctl kamailio -c -A WITH_SIPHA -f /tmp/sipha.cfg && kamailio -c -f /etc/kamailio/kamailio.cfg" >"$1/tmp/check.log" 2>&1 || { cat "$1/tmp/check.log" >&2; exit 1; }')
  fi
  # mmdebstrap's default mirror, as apt on this machine; merged /usr without the
  # usrmerge package (which pulls perl in); no man pages, docs (but copyrights) or locales.
  SOURCE_DATE_EPOCH=$EPOCH mmdebstrap --mode=root --variant=essential --format=directory \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --dpkgopt=force-unsafe-io \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/lintian/*' \
    ${pkgs:+--include="$pkgs"} "${hooks[@]}" "$SUITE" "$out.d" >"$out.log" 2>&1 ||
    { tail -40 "$out.log" >&2; die "mmdebstrap failed for $name (log above)"; }
  if [ "$name" = kamailio ]; then
    local have
    have=$(dpkg-query --admindir="$out.d/var/lib/dpkg" -W -f='${Version}' kamailio)
    [ "${have%%-*}" = "$KAMAILIO_VERSION" ] || die "Debian's kamailio is $have, the image is tagged $KAMAILIO_VERSION"
  fi
  # No apt in the images (Essential has none): drop its leftovers (the sources
  # name the mirror), and the host's resolv.conf and hostname that mmdebstrap
  # copies in (the runtime mounts its own).
  (cd "$out.d" && rm -rf etc/apt var/lib/apt var/cache/apt var/log/apt etc/resolv.conf etc/hostname \
    var/cache/debconf/*-old var/lib/dpkg/*-old run/adduser dev/*)
  tar --sort=name --mtime="@$EPOCH" --clamp-mtime --numeric-owner --xattrs --xattrs-include='security.capability' \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime -C "$out.d" -cf "$out" .
  rm -rf "$out.d"
}

# A layer tar with root-owned files and fixed mtimes, from the top entries of DIR.
layer() {
  local dir=$1 out=$2 top
  mapfile -t top < <(ls -A "$dir")
  tar --sort=name --mtime="@$EPOCH" --owner=0 --group=0 --numeric-owner \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    -C "$dir" -cf "$out" "${top[@]}"
}

# Node and the production dependencies, shared by the operator and sidecar images.
stage_node() {
  local dir=$1
  [ -x "$(node_bin)" ] || {
    log "installing Node $SIPHA_NODE_VERSION into $SIPHA_NODE_DIR"
    npm install --prefix "$SIPHA_NODE_DIR" --no-save --no-audit --no-fund --loglevel=error "node@$SIPHA_NODE_VERSION" >/dev/null
  }
  [ "$("$(node_bin)" --version)" = "v$SIPHA_NODE_VERSION" ] || die "$(node_bin) is not Node $SIPHA_NODE_VERSION"
  install -d -m 0755 "$dir/usr/local/bin" "$dir/app"
  install -m 0755 "$(node_bin)" "$dir/usr/local/bin/node"
  cp package.json package-lock.json "$dir/app/"
  log "npm ci --omit=dev"
  (cd "$dir/app" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
  # npm leaves a lockfile copy that nothing reads at run time.
  rm -f "$dir/app/node_modules/.package-lock.json"
  chmod -R u+rwX,go+rX,go-w "$dir"
}

# The base as an OCI layout (tag "base"): the root filesystem layer, then Node's.
build_base() {
  local name=$1 dir="$WORK/$1" out
  out=$(base_of "$name")
  umoci init --layout "$dir/base"
  umoci new --image "$dir/base:base"
  umoci raw add-layer --image "$dir/base:base" --history.created "$CREATED" \
    --history.created_by "mmdebstrap --variant=essential $SUITE + $(packages "$name" | paste -sd' ' -)" "$dir/rootfs.tar"
  rm "$dir/rootfs.tar"
  if [ "$name" != kamailio ]; then
    layer "$NODE_STAGE" "$dir/node.tar"
    umoci raw add-layer --image "$dir/base:base" --history.created "$CREATED" \
      --history.created_by "node $SIPHA_NODE_VERSION, npm ci --omit=dev --ignore-scripts" "$dir/node.tar"
    rm "$dir/node.tar"
  fi
  mkdir -p "$CACHE/base"
  # Older bases of this image are unreachable by key.
  find "$CACHE/base" -mindepth 1 -maxdepth 1 -name "$name-*" -exec rm -rf {} +
  mv "$dir/base" "$out"
}

# The image: the base, the app layer, the config; written as an OCI archive.
build_one() {
  local name=$1 out=$2 ref tag dir layout user workdir a args=()
  ref=$(var "$name" REF)
  tag=${ref##*:}
  dir="$WORK/$name"
  layout="$dir/oci"
  mkdir -p "$dir"
  cp -a "$(base_of "$name")" "$layout"
  umoci tag --image "$layout:base" "$tag"
  umoci rm --image "$layout:base"
  if [ "$name" != kamailio ]; then
    install -d -m 0755 "$dir/app/app"
    app_files "$name" | while IFS= read -r f; do install -D -m 0644 "$f" "$dir/app/app/$f"; done
    find "$dir/app" -type d -exec chmod 0755 {} +
    layer "$dir/app" "$dir/app.tar"
    umoci raw add-layer --image "$layout:$tag" --history.created "$CREATED" \
      --history.created_by "COPY contract $name/src /app" "$dir/app.tar"
  fi
  for a in $(arr "$name" ENTRYPOINT); do args+=(--config.entrypoint "$a"); done
  for a in $(arr "$name" CMD); do args+=(--config.cmd "$a"); done
  workdir=$(var "$name" WORKDIR)
  user=$(var "$name" USER)
  [ -z "$workdir" ] || args+=(--config.workingdir "$workdir")
  [ -z "$user" ] || args+=(--config.user "$user")
  [ -z "$SOURCE_URL" ] || args+=(--config.label "org.opencontainers.image.source=$SOURCE_URL")
  umoci config --image "$layout:$tag" --created "$CREATED" --history.created "$CREATED" \
    --history.created_by "sipha hack/images.sh" "${args[@]}" --config.env "$PATH_ENV" \
    --config.label "org.opencontainers.image.title=sipha-$name" \
    --config.label "org.opencontainers.image.version=$tag"
  umoci gc --layout "$layout"
  # containerd names an imported image after this annotation (with or without
  # --base-name); the OCI ref.name stays the bare tag, as skopeo and podman expect.
  node -e '
    const fs = require("node:fs");
    const [file, ref] = process.argv.slice(1);
    const index = JSON.parse(fs.readFileSync(file, "utf8"));
    if (index.manifests.length !== 1) throw new Error(`${file}: ${index.manifests.length} manifests`);
    index.manifests[0].annotations = { ...index.manifests[0].annotations, "io.containerd.image.name": ref };
    fs.writeFileSync(file, JSON.stringify(index));
  ' "$layout/index.json" "$ref"
  tar --sort=name --mtime="@$EPOCH" --owner=0 --group=0 --numeric-owner -C "$layout" -cf "$out.tmp" oci-layout index.json blobs
  mv "$out.tmp" "$out"
  rm -rf "$dir"
  # Older builds of this image are unreachable by key.
  find "$CACHE" -maxdepth 1 -name "$name-*.oci.tar" ! -path "$out" -delete
}

mb() { awk -v b="$(stat -c %s "$1")" 'BEGIN { printf "%.1f", b / 1048576 }'; }

build() {
  local name out missing=() bases=() sizes=() pids=() failed=0 pid
  mkdir -p "$CACHE"
  # One build at a time per cache (a test run and a manual one may overlap).
  exec 9>"$CACHE/.lock"
  flock 9
  for name in "${IMAGES[@]}"; do
    BASE_KEYS[$name]=$(base_key "$name")
    KEYS[$name]=$(key "$name")
    [ -f "$(archive_of "$name")" ] && continue
    missing+=("$name")
    [ -d "$(base_of "$name")" ] || bases+=("$name")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    need_root
    for t in mmdebstrap umoci tar npm; do command -v "$t" >/dev/null || die "$t is required (bash hack/setup.sh)"; done
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/sipha-images.XXXXXX")
    # wait: a failure leaves no mmdebstrap writing into a removed directory.
    trap 'wait; rm -rf "$WORK"' EXIT
    EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
    CREATED=$(date -u -d "@$EPOCH" +%Y-%m-%dT%H:%M:%SZ)
    SOURCE_URL=${SIPHA_IMAGE_SOURCE:-$(git remote get-url origin 2>/dev/null || echo)}
    # The root filesystems are mostly downloads and dpkg: build them side by side.
    for name in "${bases[@]}"; do
      mkdir -p "$WORK/$name"
      log "$name: root filesystem (mmdebstrap $SUITE, Essential + $(packages "$name" | paste -sd' ' -))"
      rootfs "$name" "$WORK/$name/rootfs.tar" &
      pids+=($!)
    done
    NODE_STAGE="$WORK/node"
    for name in "${bases[@]}"; do
      if [ "$name" != kamailio ] && [ ! -d "$NODE_STAGE" ]; then stage_node "$NODE_STAGE"; fi
    done
    for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
    [ "$failed" = 0 ] || die "a root filesystem failed (above)"
    for name in "${bases[@]}"; do
      build_base "$name"
      log "$name: base $(basename "$(base_of "$name")")"
    done
    for name in "${missing[@]}"; do
      out=$(archive_of "$name")
      build_one "$name" "$out"
      log "$name: built $(basename "$out")"
    done
  fi
  for name in "${IMAGES[@]}"; do
    out=$(archive_of "$name")
    log "$name: $(var "$name" REF), $(mb "$out") MB compressed"
    sizes+=("\"${name}_image_mb\":$(mb "$out")")
    echo "$(var "$name" REF) $out"
  done
  (IFS=,; echo "{${sizes[*]}}") >"$CACHE/sizes.json"
}

# The reference an archive's index names (io.containerd.image.name).
ref_of() {
  tar -xOf "$1" index.json | node -e '
    let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => {
      const ref = JSON.parse(s).manifests[0]?.annotations?.["io.containerd.image.name"];
      if (!ref) { console.error(`${process.argv[1]}: no io.containerd.image.name`); process.exit(1); }
      console.log(ref);
    });' "$1"
}

import() {
  local sock=$1 archive ref listed
  shift
  [ -S "$sock" ] || die "no containerd socket at $sock"
  command -v ctr >/dev/null || die "ctr is required (Debian package containerd)"
  local archives=("$@")
  if [ ${#archives[@]} -eq 0 ]; then
    mapfile -t archives < <(build | cut -d' ' -f2)
    [ ${#archives[@]} -eq ${#IMAGES[@]} ] || die "build did not name ${#IMAGES[@]} archives"
  fi
  for archive in "${archives[@]}"; do
    ref=$(ref_of "$archive")
    log "importing $ref"
    # --base-name: only the named image is taken from the archive, and it keeps its full name.
    ctr --address "$sock" -n k8s.io images import --base-name "${ref%:*}" \
      --snapshotter "${SIPHA_SNAPSHOTTER:-overlayfs}" "$archive" >&2
    listed=$(ctr --address "$sock" -n k8s.io images ls -q)
    grep -qxF "$ref" <<<"$listed" || die "$ref is not listed by containerd after the import"
    echo "$ref"
  done
}

case ${1:-} in
  build) build ;;
  import)
    [ $# -ge 2 ] || die "usage: hack/images.sh import <containerd socket> [archive...]"
    need_root
    shift
    import "$@"
    ;;
  *) die "usage: hack/images.sh build | import <containerd socket> [archive...]" ;;
esac
