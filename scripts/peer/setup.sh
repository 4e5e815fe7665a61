#!/usr/bin/env bash
# The peer tool's own virtual environment for scripts/bench_peer.py, idempotently:
# optimum-benchmark 0.6.0 needs transformers<5, which llem's .venv (transformers 5.x) cannot hold.
# CPU torch goes in first so nothing pulls CUDA wheels. Set LLEM_TORCH like scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
VENV=.bench-venv-peer
TORCH=${LLEM_TORCH:-torch==2.13.0}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip "$@"; }
if ! "$VENV/bin/python" -c "import optimum_benchmark" 2>/dev/null; then
  pip install -q --disable-pip-version-check --upgrade pip >/dev/null
  [ "$TORCH" = skip ] || pip install -q --disable-pip-version-check "$TORCH"
  pip install -q --disable-pip-version-check "optimum-benchmark==0.6.0" "transformers<5" \
    "$([ "$TORCH" = skip ] && echo torch || echo "$TORCH")"
fi
"$VENV/bin/python" -c "from importlib.metadata import version as v; print('peer venv ready: \
optimum-benchmark', v('optimum-benchmark'), '· transformers', v('transformers'))"
