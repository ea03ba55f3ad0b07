#!/usr/bin/env bash
# npm run bench -- NAME: runs bench/NAME.ts, prints its table, writes bench/out/NAME.json.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: npm run bench -- NAME   (one of: $(ls bench/*.ts | xargs -n1 basename | sed 's/\.ts$//' | grep -v '^lib' | tr '\n' ' '))" >&2; exit 2; }
bash hack/setup.sh >/dev/null
. hack/env.sh
name=$1; shift
[ -f "bench/$name.ts" ] || { echo "no benchmark bench/$name.ts" >&2; exit 2; }
mkdir -p bench/out
node --expose-gc "bench/$name.ts" "$@"
