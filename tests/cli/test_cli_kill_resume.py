"""A real `lcron-tf train` subprocess killed with SIGKILL mid-epoch resumes and loses nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STEPS_PER_EPOCH = 960 // 50  # 1200 requests, test_fraction 0.2, batch 50
EPOCHS = 2


def _command(run_dir: Path) -> list[str]:
    return [
        sys.executable, "-m", "lcron_tf.cli", "train", "--run-dir", str(run_dir),
        "--set", "data.num_requests=1200", "--set", f"train.epochs={EPOCHS}",
        "--set", "train.batch_size=50", "--set", "train.jit_compile=false",
        "--set", "train.steps_per_checkpoint=4", "--set", "train.verbose=0",
        "--set", "train.validate=false", "--set", "output.tensorboard=false",
        "--set", "model.retrieval_units=[32]", "--set", "model.ranker_units=[32]",
        "--set", "model.attention_units=16",
        "--set", "data.simulator={num_users: 300, num_items: 1000}",
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}


def _run(run_dir: Path) -> subprocess.CompletedProcess:
    out = subprocess.run(_command(run_dir), capture_output=True, text=True, timeout=240,
                         cwd=REPO, env=_env())
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def _state(run_dir: Path) -> dict:
    return json.loads((run_dir / "state.json").read_text())


def _checkpoint_exists(run_dir: Path) -> bool:
    return (run_dir / "backup" / "chief" / "checkpoint").is_file()


def _step(run_dir: Path) -> int:
    try:
        return json.loads((run_dir / "progress.json").read_text())["step"]
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.slow
def test_sigkill_mid_epoch_then_same_command_resumes(tmp_path):
    # Kill: wait until a checkpoint exists and training is in the middle of epoch 1 or 2.
    killed_dir = tmp_path / "killed"
    proc = subprocess.Popen(_command(killed_dir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            cwd=REPO, env=_env())
    deadline = time.time() + 180
    killed_at = None
    try:
        while time.time() < deadline and proc.poll() is None:
            step = _step(killed_dir)
            if _checkpoint_exists(killed_dir) and step >= 10 and step % STEPS_PER_EPOCH != 0:
                os.kill(proc.pid, signal.SIGKILL)
                killed_at = step
                break
            time.sleep(0.02)
    finally:
        if proc.poll() is None and killed_at is None:
            proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()
    assert killed_at is not None, "training ended before it could be killed mid-epoch"
    assert proc.returncode == -signal.SIGKILL
    assert _state(killed_dir)["status"] == "running"
    assert not (killed_dir / "model").exists()

    # Same command again: resumes from the last checkpoint, finishes the planned steps.
    resumed = _run(killed_dir)
    line = next(x for x in resumed.stdout.splitlines() if "resumed from step" in x)
    resumed_from = int(line.split("resumed from step")[1].split()[0])
    assert 0 < resumed_from <= killed_at
    assert resumed_from % 4 == 0  # a checkpoint every 4 steps
    state = _state(killed_dir)
    assert state["status"] == "complete"
    assert state["resumes"] == [resumed_from]

    # An uninterrupted run of the same command ends with the same optimizer step count.
    clean_dir = tmp_path / "clean"
    _run(clean_dir)
    clean = _state(clean_dir)
    assert clean["resumes"] == []
    assert state["optimizer_steps"] == clean["optimizer_steps"] == EPOCHS * STEPS_PER_EPOCH
    history = json.loads((killed_dir / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))
    assert history[-1]["step"] == EPOCHS * STEPS_PER_EPOCH

    # Deterministic data order (the batch of every step is fixed in advance) and the restored
    # optimizer state: the resumed run trains on exactly the batches of the uninterrupted one.
    import numpy as np
    import tensorflow as tf

    a = tf.train.load_checkpoint(str(killed_dir / "model" / "weights"))
    b = tf.train.load_checkpoint(str(clean_dir / "model" / "weights"))
    names = [n for n in a.get_variable_to_shape_map() if "ATTRIBUTES/VARIABLE_VALUE" in n]
    assert any("optimizer" in n for n in names) and len(names) > 10
    worst = max(float(np.max(np.abs(a.get_tensor(n) - b.get_tensor(n)))) for n in names)
    assert worst < 1e-5, worst  # bit-identical on CPU in practice (weights and Adam slots)
