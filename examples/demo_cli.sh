#!/usr/bin/env bash
# `make demo`: the lcron-tf command line end to end on the embedded default config
# (2-stage DSSM -> DIN cascade, RecFlow-shaped simulator, XLA): train -> evaluate -> export
# -> predict -> report. Re-running resumes / skips the finished training (same run dir).
#
#   bash examples/demo_cli.sh            # uses .venv/bin/lcron-tf, else python -m lcron_tf.cli
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/lcron-tf ]; then
  LCRON=(.venv/bin/lcron-tf)
else
  LCRON=("${PYTHON:-.venv/bin/python}" -m lcron_tf.cli)
fi
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
# Hide TensorFlow's C++ start-up chatter (oneDNN / CUDA notices) on stderr; errors stay visible.
exec 2> >(grep --line-buffered -v -E '^(I0000|W0000|E0000) |^WARNING: All log messages before absl' >&2)
start=$(date +%s)
"${LCRON[@]}" train --fresh          # embedded default: runs/demo, 3 epochs, XLA
"${LCRON[@]}" evaluate               # prints the results table, writes runs/demo/eval.json
"${LCRON[@]}" export --overwrite --version 1   # saved_models/lcron/1
"${LCRON[@]}" predict --num-requests 2
"${LCRON[@]}" report                 # runs/demo/report/*.png + report.md
echo "[demo] total wall time: $(( $(date +%s) - start )) s"
