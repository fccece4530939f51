"""MirroredStrategy over 2 logical CPU devices gives the same loss as no strategy.

Logical devices must be configured before TensorFlow initialises its devices, so the
check runs in a fresh interpreter (models_mirrored_check.py) and reports JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models_mirrored_check.py")


@pytest.fixture(scope="module")
def result():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, SCRIPT], capture_output=True, text=True, timeout=400, env=env
    )
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


@pytest.mark.slow
def test_mirrored_loss_equals_single_device_loss(result):
    assert result["num_replicas"] == 2
    assert result["replica_batches"] == [16, 16]  # the global batch is split across replicas
    assert result["loss_mirrored"] == pytest.approx(result["loss_plain"], rel=1e-5, abs=1e-6)


@pytest.mark.slow
def test_mirrored_fit_with_per_replica_xla_matches(result):
    assert result["jit_per_replica"] is True  # whole-step XLA is replaced by per-replica XLA
    assert result["fit_loss_mirrored"] == pytest.approx(result["fit_loss_plain"], rel=1e-5)
    assert result["joint_recall_mirrored"] == pytest.approx(result["joint_recall_plain"])
    assert result["max_weight_diff"] < 1e-4  # same gradients -> same weights after 3 steps
