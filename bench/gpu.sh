#!/usr/bin/env bash
# The GPU check of issue 20 (bench/gpu.py): under 8 minutes on one GPU, no downloaded weights, no
# dataset packages; genba need not be installed (it runs from src/ through PYTHONPATH).
#
#   bash bench/gpu.sh              # on a CUDA machine: writes bench/results/gpu.json and gpu.md
#   bash bench/gpu.sh --dry-run    # the same code paths at tiny sizes on the CPU (what CI runs)
#
# PYTHON picks the interpreter (default python3). Every section has its own time limit inside
# gpu.py; this outer limit only guards against a hang outside them.
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec timeout --kill-after=10 475 "${PYTHON:-python3}" bench/gpu.py "$@"
