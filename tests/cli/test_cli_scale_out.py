"""Streamed training resumes exactly after SIGKILL; 2 loopback workers, one of them killed
with SIGKILL mid-run and the group restarted, train as 1 process without losing a step.

Every run is a real ``python -m lcron_tf.cli train`` subprocess on TFRecords streamed from
disk. The workers of ``--num-workers 2`` run in a private network namespace whose only
interface is loopback (``--worker-network private``; TensorFlow's gRPC server itself
listens on all interfaces), so nothing outside this machine can reach them; the tests that
need it are skipped where no namespace can be created. Every process a test starts runs in
its own process group, which the test kills in ``finally``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from lcron_tf.cli.rundir import MARKER
from lcron_tf.cli.workers import private_network_command

REPO = Path(__file__).resolve().parents[2]
TRAIN, TEST, BATCH, STREAMS = 320, 40, 40, 2
STEPS_PER_EPOCH = TRAIN // BATCH  # 2 streams of 160 records, micro-batches of 20
EPOCHS, CHECKPOINT_EVERY = 2, 2
STEPS = EPOCHS * STEPS_PER_EPOCH

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from lcron_tf.data import simulate, write_tfrecords

    base = tmp_path_factory.mktemp("records")
    schema, arrays = simulate(num_requests=TRAIN + TEST, num_users=200, num_items=800)
    write_tfrecords({k: v[:TRAIN] for k, v in arrays.items()}, schema, base / "train",
                    num_shards=4)
    write_tfrecords({k: v[TRAIN:] for k, v in arrays.items()}, schema, base / "test")
    return base


def command(run_dir: Path, data_dir: Path, *extra: str) -> list[str]:
    sets = [
        "data.source=tfrecord", f"data.path={data_dir}", f"data.read_streams={STREAMS}",
        "data.shuffle_buffer=64", f"train.epochs={EPOCHS}", f"train.batch_size={BATCH}",
        "train.jit_compile=false", f"train.steps_per_checkpoint={CHECKPOINT_EVERY}",
        "train.verbose=0", "train.validate=false", "output.tensorboard=false",
        "model.retrieval_units=[16]", "model.ranker_units=[16]", "model.attention_units=8",
        "model.emb_dim=4",
    ]
    return [sys.executable, "-m", "lcron_tf.cli", "train", "--run-dir", str(run_dir),
            *[x for s in sets for x in ("--set", s)], *extra]


def env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}


class Run:
    """A train command in its own process group; output collected by a thread."""

    def __init__(self, cmd: list[str]) -> None:
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, cwd=REPO, env=env(), start_new_session=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait(self, timeout: float) -> int:
        try:
            rc = self.proc.wait(timeout=timeout)
        finally:
            self.stop()
        return rc

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=60)
        self._reader.join(timeout=10)


def run_to_end(cmd: list[str], timeout: float = 420) -> str:
    run = Run(cmd)
    rc = run.wait(timeout)
    assert rc == 0, run.output[-4000:]
    return run.output


def step(run_dir: Path) -> int:
    try:
        return json.loads((run_dir / "progress.json").read_text())["step"]
    except (OSError, ValueError, KeyError):
        return 0


def mid_epoch_with_checkpoint(run_dir: Path) -> int | None:
    """The current step when a checkpoint exists and training is inside an epoch."""
    s = step(run_dir)
    if (run_dir / "backup" / "chief" / "checkpoint").is_file() and s > CHECKPOINT_EVERY \
            and s % STEPS_PER_EPOCH != 0 and s < STEPS:
        return s
    return None


def state(run_dir: Path) -> dict:
    return json.loads((run_dir / "state.json").read_text())


def weights(run_dir: Path) -> dict[str, np.ndarray]:
    """Model weights and optimizer slots of the final checkpoint (metric state left out)."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(run_dir / "model" / "weights"))
    return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()
            if "ATTRIBUTES/VARIABLE_VALUE" in n and "_metrics/" not in n}


def max_diff(a: dict, b: dict) -> float:
    assert sorted(a) == sorted(b) and len(a) > 10
    assert any("optimizer" in n for n in a)
    return max(float(np.max(np.abs(a[n] - b[n]))) for n in a)


def losses(run_dir: Path) -> list[float]:
    return [h["loss"] for h in json.loads((run_dir / "history.json").read_text())]


def assert_complete(run_dir: Path, resumes: int) -> dict:
    s = state(run_dir)
    assert s["status"] == "complete" and s["optimizer_steps"] == s["planned_steps"] == STEPS
    assert len(s["resumes"]) == resumes
    history = json.loads((run_dir / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))
    assert history[-1]["step"] == STEPS
    assert not (run_dir / "backup").exists()
    return s


@pytest.fixture(scope="module")
def single(tmp_path_factory, data_dir):
    run_dir = tmp_path_factory.mktemp("single") / "run"
    out = run_to_end(command(run_dir, data_dir))
    assert "streamed from" in out and "2 read stream(s)" in out
    assert_complete(run_dir, resumes=0)
    return run_dir


def kill_when_mid_epoch(run: Run, run_dir: Path, pid_of_victim, timeout: float = 300) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline and run.proc.poll() is None:
        at = mid_epoch_with_checkpoint(run_dir)
        pid = pid_of_victim()
        if at is not None and pid is not None:
            os.kill(pid, signal.SIGKILL)
            return at
        time.sleep(0.02)
    raise AssertionError("training ended before it could be killed mid-epoch:\n"
                         + run.output[-3000:])


def test_streamed_run_killed_with_sigkill_resumes_with_the_same_batches(single, data_dir,
                                                                         tmp_path):
    run_dir = tmp_path / "killed"
    run = Run(command(run_dir, data_dir))
    try:
        killed_at = kill_when_mid_epoch(run, run_dir, lambda: run.proc.pid)
        assert run.proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        run.stop()
    assert state(run_dir)["status"] == "running" and not (run_dir / "model").exists()

    out = run_to_end(command(run_dir, data_dir))  # the same command again
    resumed_from = int(re.search(r"resumed from step (\d+)", out).group(1))
    assert 0 < resumed_from <= killed_at and resumed_from % CHECKPOINT_EVERY == 0
    assert assert_complete(run_dir, resumes=1)["resumes"] == [resumed_from]
    # Exactly the batches of the uninterrupted run (same weights and Adam slots; bit-identical
    # on CPU in practice).
    assert max_diff(weights(run_dir), weights(single)) < 1e-5


def test_two_loopback_workers_killed_and_restarted_train_as_one(single, data_dir, tmp_path):
    if private_network_command() is None:
        pytest.skip("cannot create a private network namespace (unshare --net) for the "
                    "loopback workers; TensorFlow's gRPC server would listen on all interfaces")
    run_dir = tmp_path / "two"
    run = Run(command(run_dir, data_dir, "--num-workers", "2", "--worker-network", "private",
                      "--max-restarts", "1", "--set", "output.tensorboard=true",
                      "--set", "train.validate=true"))

    def worker1() -> int | None:
        found = re.findall(r"started worker 1 \(pid (\d+)\)", run.output)
        return int(found[0]) if found else None

    try:
        killed_at = kill_when_mid_epoch(run, run_dir, worker1)
        rc = run.proc.wait(timeout=600)
    finally:
        run.stop()
    out = run.output
    assert rc == 0, out[-4000:]
    assert "private network namespace" in out
    assert "2 workers (MultiWorkerMirroredStrategy, 2 replicas)" in out
    # The launcher saw the kill, stopped worker 0 and started both again; they resumed.
    assert "worker 1 was killed by SIGKILL" in out and "restart 1 of 1" in out
    resumed_from = int(re.search(r"resumed from step (\d+)", out).group(1))
    assert 0 < resumed_from <= killed_at and resumed_from % CHECKPOINT_EVERY == 0
    s = assert_complete(run_dir, resumes=1)
    assert s["resumes"] == [resumed_from] and s["num_workers"] == 2
    # Only the chief wrote the run directory; the other worker's copies are gone.
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(
        [MARKER, "config.yaml", "history.json", "model", "progress.json", "schema.json",
         "state.json", "tb"])
    assert not any(p.name.startswith("workertemp") for p in run_dir.rglob("*"))
    # The same global batches as one process, no step lost or repeated: the same loss in
    # every epoch that was not interrupted, and after 16 Adam steps the same weights up to
    # float reassociation (the gradient is summed over 2 workers). Feeding the rows of each
    # batch in another order moves the weights by ~2e-5 after 16 steps on an AMD EPYC; on an
    # Intel Xeon with AVX-512 (oneDNN picks other kernels for the half-size worker batches)
    # the 2-worker run differs from one process by 1.3e-3 (the ranking tower's embedding,
    # deterministic from run to run). One lost, repeated or wrong batch moves them by ~1e-2.
    history = json.loads((run_dir / "history.json").read_text())
    whole = [i for i, h in enumerate(history) if not h.get("resumed_mid_epoch")]
    assert whole and "val_loss" in history[-1]
    np.testing.assert_allclose([history[i]["loss"] for i in whole],
                               [losses(single)[i] for i in whole], rtol=1e-4)
    assert max_diff(weights(run_dir), weights(single)) < 3e-3
