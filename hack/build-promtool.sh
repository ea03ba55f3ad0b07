#!/usr/bin/env bash
# promtool (Prometheus's rule checker and rule unit-test runner) for the
# observability tests, from Debian's prometheus package: downloaded with apt
# (not installed: the package would start a Prometheus server) and unpacked
# into the cache outside the repo, keyed by version. Building it from its Go
# module took 7 min of CPU on a cold machine, which the 30-minute CI budget
# cannot spare (decision 0008). Prints the binary's path on its last line.
set -euo pipefail

CACHE=${SIPHA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sipha}
version=$(apt-cache policy prometheus | awk '/Candidate:/ { print $2 }')
[ -n "$version" ] && [ "$version" != "(none)" ] || {
  echo "build-promtool: no prometheus package known to apt (run hack/setup.sh)" >&2
  exit 1
}
BIN="$CACHE/promtool-deb-${version//[^A-Za-z0-9.+-]/_}/bin"
have_promtool() { [ -x "$BIN/promtool" ]; }
. "$(dirname "${BASH_SOURCE[0]}")/lib/build-lock.sh"
if cached_or_locked promtool have_promtool; then echo "$BIN/promtool"; exit 0; fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chown _apt "$work" 2>/dev/null || true # apt downloads as its own user
(cd "$work" && apt-get download -q "prometheus=$version" >&2)
dpkg-deb -x "$work"/prometheus_*.deb "$work/x"
mkdir -p "$BIN"
install -m 755 "$work/x/usr/bin/promtool" "$BIN/promtool"
echo "build-promtool: promtool $version from Debian's package" >&2
echo "$BIN/promtool"
