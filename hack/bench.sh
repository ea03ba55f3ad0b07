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
# A benchmark's load tool stands for many clients from one address: the per-address request
# rate (a protection against one flooding address) is set past any load here unless the run
# sets it, so its per-message cost is in every figure but it never binds. The attack
# benchmark's floods thus measure what the pair itself withstands; the limit's own effect is
# tested in test/integration/attacks.test.ts.
export SIPHA_REQUEST_RATE_PER_ADDRESS="${SIPHA_REQUEST_RATE_PER_ADDRESS-1000000}"
node --expose-gc "bench/$name.ts" "$@"
