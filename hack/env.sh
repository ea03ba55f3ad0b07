# Sourced by the hack/ scripts: puts a Node >= 24 first on PATH and names
# the cache that lives outside the repo (Node, Kubernetes binaries).
export SIPHA_CACHE="${SIPHA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sipha}"
SIPHA_NODE_VERSION="${SIPHA_NODE_VERSION:-24.21.0}"
SIPHA_NODE_DIR="$SIPHA_CACHE/node-$SIPHA_NODE_VERSION"

node_major() { command -v node >/dev/null 2>&1 && node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }

if [ "$(node_major)" -lt 24 ] && [ -x "$SIPHA_NODE_DIR/node_modules/.bin/node" ]; then
  export PATH="$SIPHA_NODE_DIR/node_modules/.bin:$PATH"
fi
