"""`lcron-tf train` uses, and `--fresh` deletes, only run directories lcron-tf created.

Real `python -m lcron_tf.cli` subprocesses on real directories: a foreign directory (even
`--run-dir .`) is refused with exit 2 and left byte for byte; a run directory of an earlier
lcron-tf (no marker) is refused with a message that says how to adopt it; once adopted,
`--fresh` deletes only lcron-tf's entries; a checkpoint of another model without its
`config.yaml` is refused before anything claims to resume.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lcron_tf.cli import rundir
from lcron_tf.cli.main import main

REPO = Path(__file__).resolve().parents[2]
TOY = [
    "--set", "data.num_requests=400", "--set", "train.epochs=1", "--set", "train.batch_size=100",
    "--set", "train.jit_compile=false", "--set", "train.steps_per_checkpoint=2",
    "--set", "train.verbose=0", "--set", "train.validate=false",
    "--set", "output.tensorboard=false",
    "--set", "model.retrieval_units=[16]", "--set", "model.ranker_units=[16]",
    "--set", "model.attention_units=8", "--set", "data.simulator={num_users: 200, num_items: 800}",
]


def _cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "lcron_tf.cli", *args], capture_output=True,
                          text=True, timeout=300, cwd=cwd, env=env)


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None for directories)."""
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes())
            for p in sorted(root.rglob("*"))}


def _foreign_dir(path: Path) -> Path:
    (path / "chapters").mkdir(parents=True)
    (path / "chapters" / "ch1.tex").write_text("\\chapter{One}")
    (path / "thesis.bib").write_text("@book{x}")
    return path


def test_cli_fresh_refuses_foreign_dir(tmp_path):
    """`--run-dir . --fresh` in a directory lcron-tf did not create: exit 2, nothing touched."""
    thesis = _foreign_dir(tmp_path / "thesis")
    before = _tree(thesis)
    out = _cli("train", "--run-dir", ".", "--fresh", *TOY, cwd=thesis)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "refusing to delete the contents of" in out.stderr and rundir.MARKER in out.stderr
    assert "Nothing in it was touched" in out.stderr and "Traceback" not in out.stderr
    assert "removing" not in out.stdout
    assert _tree(thesis) == before
    # Without --fresh it is not trained in either (train would write model/, backup/, ...).
    assert main(["train", "--run-dir", str(thesis), *TOY]) == 2
    assert _tree(thesis) == before


@pytest.mark.slow  # two CLI processes, one of which trains
def test_cli_old_run_dir_is_refused_then_adopted_and_fresh_keeps_foreign_files(tmp_path):
    old = tmp_path / "runs" / "demo"  # as an earlier lcron-tf left it: no marker
    (old / "model").mkdir(parents=True)
    (old / "model" / "weights.index").write_bytes(b"old weights")
    (old / "config.yaml").write_text("train: {epochs: 9}\n")
    (old / "state.json").write_text(json.dumps({"status": "complete", "optimizer_steps": 9}))
    (old / "history.json").write_text("[]")
    (old / "notes.txt").write_text("my notes about this run")
    before = _tree(old)
    refused = _cli("train", "--run-dir", str(old), "--fresh", *TOY)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "earlier lcron-tf" in refused.stderr
    assert f"touch '{old / rundir.MARKER}'" in refused.stderr
    assert _tree(old) == before

    (old / rundir.MARKER).touch()  # what the message says to do
    fresh = _cli("train", "--run-dir", str(old), "--fresh", *TOY)
    assert fresh.returncode == 0, fresh.stdout[-3000:] + fresh.stderr[-3000:]
    assert "kept 1 entries lcron-tf did not write: notes.txt" in fresh.stdout
    assert (old / "notes.txt").read_text() == "my notes about this run"
    assert (old / rundir.MARKER).is_file()
    state = json.loads((old / "state.json").read_text())
    assert state["status"] == "complete" and state["optimizer_steps"] == 3  # 320 // 100
    assert (old / "model" / "weights.index").read_bytes() != b"old weights"
    assert "epochs: 1" in (old / "config.yaml").read_text()


def _real_checkpoint(backup: Path, units: int) -> None:
    """A BackupAndRestore checkpoint (2 steps) of the toy model with other tower sizes."""
    from lcron_tf._keras import keras
    from lcron_tf.cli.build import build_model, load_data
    from lcron_tf.cli.config import load_config
    from lcron_tf.data import to_dataset

    overrides = [a for a in TOY if a != "--set"] + [f"model.retrieval_units=[{units}]"]
    cfg = load_config(None, overrides)
    schema, train, _ = load_data(cfg)
    model = build_model(cfg, schema)
    model.compile(optimizer=keras.optimizers.Adam(0.01), jit_compile=False)
    model.fit(to_dataset(train, 100, seed=0), epochs=1, steps_per_epoch=2, verbose=0,
              callbacks=[keras.callbacks.BackupAndRestore(str(backup), save_freq=1,
                                                          delete_checkpoint=False)])
    assert (backup / "chief" / "checkpoint").is_file()


def test_cli_checkpoint_of_another_model_without_config_is_refused(tmp_path):
    run = tmp_path / "run"
    _real_checkpoint(run / "backup", units=8)  # TOY has retrieval_units=[16]
    before = _tree(run)
    out = _cli("train", "--run-dir", str(run), *TOY)  # no marker, as an earlier version left it
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    assert "resumed from step" not in out.stdout and "Traceback" not in out.stderr
    assert "earlier lcron-tf" in out.stderr
    assert _tree(run) == before
    (run / rundir.MARKER).touch()  # adopted, but its config.yaml is gone
    assert main(["train", "--run-dir", str(run), *TOY]) == 2
    assert {k: v for k, v in _tree(run).items() if k != rundir.MARKER} == before


def test_checkpoint_that_does_not_fit_the_model_is_named_before_resuming(tmp_path):
    from lcron_tf.cli.build import build_model, first_batch, load_data
    from lcron_tf.cli.config import load_config
    from lcron_tf.cli.training import checkpoint_mismatch

    _real_checkpoint(tmp_path / "backup", units=8)
    for units, fits in ((16, False), (8, True)):
        overrides = [a for a in TOY if a != "--set"] + [f"model.retrieval_units=[{units}]"]
        cfg = load_config(None, overrides)
        schema, train, _ = load_data(cfg)
        model = build_model(cfg, schema)
        model(first_batch(train, 4), training=False)
        problem = checkpoint_mismatch(model, tmp_path / "backup")
        assert (problem is None) == fits, problem
        if not fits:
            assert "shape" in problem or "match" in problem


def test_fresh_deletes_only_lcron_entries_and_never_follows_links(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / rundir.MARKER).touch()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "data.bin").write_bytes(b"precious")
    for name in ("config.yaml", "state.json", "progress.json", ".state.json.abc123_x.tmp",
                 ".survival.k2j3h4.npz"):
        (run / name).write_text("x")
    for name in ("backup", "report", "tb", ".model-a1b2c3d4", ".model-old-123"):
        (run / name).mkdir()
        (run / name / "f").write_text("x")
    os.symlink(outside, run / "model")  # an lcron name that points elsewhere
    keep = ["my_notes.txt", ".model", "config.yaml.bak", ".notes.tmp", "models"]
    for name in keep:
        (run / name).write_text("mine")
    assert rundir.clear(run) == sorted(keep)
    assert sorted(os.listdir(run)) == sorted([rundir.MARKER, *keep])
    assert (outside / "data.bin").read_bytes() == b"precious"
    # Without the marker nothing is cleared.
    (run / rundir.MARKER).unlink()
    with pytest.raises(rundir.RunDirError, match="no .lcron-tf-run marker"):
        rundir.clear(run)
    assert sorted(os.listdir(run)) == sorted(keep)


def test_run_dir_that_cannot_be_created_is_a_usage_error(tmp_path):
    with pytest.raises(rundir.RunDirError, match="cannot create or write run directory"):
        rundir.claim("/proc/lcron_tf_run_dir_test")
    a_file = tmp_path / "f"
    a_file.write_text("x")
    with pytest.raises(rundir.RunDirError, match="not a directory"):
        rundir.check(a_file)
    if os.geteuid() != 0:  # root may write anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        with pytest.raises(rundir.RunDirError, match="ro"):
            rundir.claim(ro / "run")
    rundir.claim(tmp_path / "new" / "run")
    assert rundir.is_owned(tmp_path / "new" / "run")
    assert json.loads((tmp_path / "new" / "run" / rundir.MARKER).read_text())["created_by"]
