#!/bin/sh
# The benchmark's peer: the LiteLLM proxy, in its own virtual environment outside the project's.
#
#   scripts/bench_peer.sh install            # once; idempotent
#   scripts/bench_peer.sh run CONFIG PORT    # foreground; the bench starts and stops it
#
# litellm is installed at the version memproxyd pins (setup.cfg). Its `[proxy]` extra names a
# `litellm-proxy` package the registry may not serve, so the proxy's server dependencies are
# read from the installed package's own metadata and installed by name instead.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PEER=${BENCH_PEER_VENV:-$ROOT/.bench/litellm-proxy}
PYTHON=${PYTHON:-python3}
VERSION=$(sed -n 's/^ *litellm==\([0-9][0-9.]*\).*/\1/p' "$ROOT/setup.cfg")

install() {
    if [ -f "$PEER/.installed-$VERSION" ]; then
        return 0
    fi
    test -x "$PEER/bin/python" || "$PYTHON" -m venv "$PEER"
    "$PEER/bin/python" -m pip install --quiet --upgrade pip
    "$PEER/bin/python" -m pip install --quiet "litellm==$VERSION"
    "$PEER/bin/python" - > "$PEER/proxy-requirements.txt" <<'PY'
from importlib.metadata import requires
from packaging.requirements import Requirement

for spec in requires("litellm") or ():
    req = Requirement(spec)
    if req.name.startswith("litellm-proxy") or not req.marker:
        continue
    if req.marker.evaluate({"extra": "proxy"}) and not req.marker.evaluate({"extra": ""}):
        print(req.name)
PY
    # By name: the extra pins builds the registry may lack; pip picks what fits litellm.
    if ! "$PEER/bin/python" -m pip install --quiet -r "$PEER/proxy-requirements.txt" \
            "litellm==$VERSION"; then
        while read -r name; do       # one by one: a package the registry lacks is skipped
            "$PEER/bin/python" -m pip install --quiet "$name" "litellm==$VERSION" \
                || echo "bench_peer: skipped $name" >&2
        done < "$PEER/proxy-requirements.txt"
    fi
    touch "$PEER/.installed-$VERSION"
}

case "${1:-}" in
    install) install ;;
    run)
        test -f "$PEER/.installed-$VERSION" || { echo "peer not installed: $0 install" >&2; exit 3; }
        LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOG=ERROR \
            exec "$PEER/bin/litellm" --config "$2" --host 127.0.0.1 --port "$3" --num_workers 1 ;;
    *) echo "usage: $0 install | run CONFIG PORT" >&2; exit 2 ;;
esac
