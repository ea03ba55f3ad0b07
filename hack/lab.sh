#!/usr/bin/env bash
# The lab demo (the main job): Kamailio + sipha sidecar on one netns host,
# clients on others; registers users and places calls through the sidecar
# and prints what happened. Needs root (network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/setup.sh
. hack/env.sh
node hack/lab/demo.ts "$@"
