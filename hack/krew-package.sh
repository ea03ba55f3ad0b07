#!/usr/bin/env bash
# Packs `kubectl sipha` for krew: an archive that runs on its own with Node 24
# (the plugin's sources, the contract/ files they import, a package.json that
# makes them ESM, and the runtime dependencies from node_modules without their
# type declarations and source maps), and the krew manifest from
# plugins/krew/sipha.yaml with version, uri and sha256 filled in.
#   bash hack/krew-package.sh <uri where the archive will be published>
# Output in $SIPHA_DIST (default dist/): kubectl-sipha-<version>.tar.gz, sipha.yaml.
# The archive is reproducible (sorted names, fixed times and owners, gzip -n).
set -euo pipefail
cd "$(dirname "$0")/.."
uri=${1:?usage: hack/krew-package.sh <uri of the archive>}
. hack/env.sh
version="v$(node -p 'require("./package.json").version')"
dist=${SIPHA_DIST:-dist}
mkdir -p "$dist"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

mkdir -p "$stage/cli" "$stage/contract" "$stage/node_modules"
cp -a cli/kubectl-sipha cli/src "$stage/cli/"
cp -a contract/*.ts "$stage/contract/"
[ -f LICENSE ] && cp LICENSE "$stage/"
node -e '
  const p = require("./package.json");
  const out = { name: "kubectl-sipha", version: p.version, type: "module", license: p.license, private: true,
    engines: p.engines, dependencies: { "@kubernetes/client-node": p.dependencies["@kubernetes/client-node"] } };
  process.stdout.write(JSON.stringify(out, null, 2) + "\n");' > "$stage/package.json"
# The runtime dependency tree as npm resolved it (paths under node_modules/).
npm ls --omit=dev --all --parseable 2>/dev/null | tail -n +2 | while read -r dir; do
  rel=${dir#"$PWD/"}
  mkdir -p "$stage/$(dirname "$rel")"
  cp -aT "$dir" "$stage/$rel" # -T: a nested dependency already copied with its parent merges, never nests
done
find "$stage/node_modules" \( -name '*.map' -o -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' \) -type f -delete

archive="$dist/kubectl-sipha-$version.tar.gz"
tar -C "$stage" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf - . | gzip -n -9 > "$archive"
sha=$(sha256sum "$archive" | cut -d' ' -f1)
sed -e "s|@VERSION@|$version|" -e "s|@URI@|$uri|" -e "s|@SHA256@|$sha|" plugins/krew/sipha.yaml > "$dist/sipha.yaml"
echo "$archive $(du -h "$archive" | cut -f1) sha256 $sha"
echo "$dist/sipha.yaml"
