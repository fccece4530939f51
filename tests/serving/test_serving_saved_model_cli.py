"""``saved_model_cli show --all`` and ``saved_model_cli run`` on the export."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lcron_tf._keras import tf
from lcron_tf.serving.export import CascadeServingModule


def _cli() -> str:
    exe = Path(sys.executable).with_name("saved_model_cli")
    if exe.exists():
        return str(exe)
    found = shutil.which("saved_model_cli")
    if found is None:
        pytest.skip("saved_model_cli is not installed next to this Python or on PATH")
    return found


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return subprocess.run(
        [_cli(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=150
    )


def test_show_all_lists_signatures(exported: Path, tmp_path):
    proc = _run(["show", "--dir", str(exported), "--all"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    sigs = ("serving_default", "score_retrieval", "score_ranking", "query_embedding", "retrieve")
    for sig in sigs:
        assert f"signature_def['{sig}']" in out, sig
    assert "Method name is: tensorflow/serving/predict" in out
    # Only stock ops: no XLA, py_function or custom (e.g. ScaNN) ops a stock server lacks.
    ops = [line for line in out.splitlines() if "contains the following ops" in line]
    assert ops, out[:2000]
    for bad in ("Xla", "PyFunc", "EagerPyFunc", "Scann"):
        assert bad not in ops[0], bad
    # Explicit input signature: serving inputs only, dynamic batch and N, no labels.
    default = out.split("signature_def['serving_default']")[1].split("signature_def[")[0]
    for name, shape in [
        ("user_id", "(-1)"), ("user_features", "(-1, 2)"), ("history", "(-1, 5)"),
        ("item_id", "(-1, -1)"), ("item_features", "(-1, -1, 2)"), ("mask", "(-1, -1)"),
    ]:
        assert f"inputs['{name}']" in default and shape in default, name
    assert "label" not in default and "stage_group" not in default
    for name in ("selected_indices", "final_scores", "stage_scores", "survival_mask"):
        assert f"outputs['{name}']" in default, name


def test_run_on_npy_inputs_matches(exported: Path, toy_model, request_batch, tmp_path):
    for k, v in request_batch.items():
        np.save(tmp_path / f"{k}.npy", v)
    outdir = tmp_path / "out"
    inputs = ";".join(f"{k}={tmp_path / (k + '.npy')}" for k in request_batch)
    proc = _run(
        ["run", "--dir", str(exported), "--tag_set", "serve", "--signature_def",
         "serving_default", "--inputs", inputs, "--outdir", str(outdir)],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Compare with the in-memory serving module (same math as the export, not reloaded).
    module = CascadeServingModule(toy_model)
    want = module.serve({k: tf.constant(v) for k, v in request_batch.items()})
    np.testing.assert_allclose(
        want["stage_scores"].numpy(),
        toy_model({k: tf.constant(v) for k, v in request_batch.items()}).numpy(),
        rtol=1e-6,
    )
    assert sorted(p.stem for p in outdir.glob("*.npy")) == sorted(want)
    for key, value in want.items():
        got = np.load(outdir / f"{key}.npy")
        np.testing.assert_allclose(got, value.numpy(), rtol=1e-5, atol=1e-6, err_msg=key)
