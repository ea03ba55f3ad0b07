#!/usr/bin/env bash
# Installs what sipha's lab, tests and benchmarks need on a fresh Debian
# machine, and nothing twice: Debian packages (Kamailio, sipp, tshark,
# iproute2, keepalived...), Node 24 from the npm registry when the machine's
# Node is older, and the npm dependencies (`npm ci` when the lock changed).
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/env.sh

need_root() { [ "$(id -u)" = 0 ] || { echo "setup: run as root (network namespaces, apt)" >&2; exit 1; }; }

APT_PACKAGES=(fonts-dejavu-core kamailio kamailio-tls-modules sip-tester tshark iproute2 iputils-arping keepalived tcpdump curl conntrack procps baresip nftables
  containerd runc containernetworking-plugins iptables mmdebstrap umoci openssl gcc libc6-dev)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  need_root
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  echo 'wireshark-common wireshark-common/install-setuid boolean false' | debconf-set-selections
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ "$(node_major)" -lt 24 ]; then
  echo "setup: installing Node $SIPHA_NODE_VERSION (the machine has $(node --version 2>/dev/null || echo none))"
  mkdir -p "$SIPHA_NODE_DIR"
  npm install --prefix "$SIPHA_NODE_DIR" --no-save --no-audit --no-fund --loglevel=error "node@$SIPHA_NODE_VERSION" >/dev/null
  export PATH="$SIPHA_NODE_DIR/node_modules/.bin:$PATH"
fi
[ "$(node_major)" -ge 24 ] || { echo "setup: Node 24 is not on PATH after install" >&2; exit 1; }

stamp=node_modules/.sipha-lock-stamp
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" > "$stamp"
fi
echo "setup: ready (node $(node --version), kamailio $(kamailio -v 2>/dev/null | sed -n 's/^version: kamailio \([^ ]*\).*/\1/p'), $(sipp -v 2>/dev/null | grep -o 'SIPp v[0-9.]*' | head -1))"
