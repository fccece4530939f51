#!/usr/bin/env bash
# One command for a GPU machine: parity of XLA-on-GPU loss and gradients with the CPU, the loss
# benchmark and the training benchmark of the paper preset; prints RESULTS.md rows. Finishes in
# <= 8 minutes (a 420 s budget inside skips what does not fit, then the last compile ends).
#
#   bash benchmarks/gpu.sh                 # uses the GPU when TensorFlow sees one, else the CPU
#   bash benchmarks/gpu.sh --device gpu    # fail if there is no GPU
#   bash benchmarks/gpu.sh --device cpu --quick   # the CPU smoke run (how it is tested here)
#
# Needs the repository's environment (.venv or PYTHON=...); on a GPU machine TensorFlow must be
# the CUDA build (pip install "tensorflow[and-cuda]==2.21.*").
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
mkdir -p benchmarks/results
exec timeout 480 "$PY" benchmarks/gpu_check.py --json benchmarks/results/gpu_check.json "$@"
