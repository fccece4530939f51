"""lcron-tf end to end at toy size: train -> evaluate -> export -> predict -> report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lcron_tf.cli.main import main

TOY = [
    "--set", "data.num_requests=600", "--set", "train.epochs=2", "--set", "train.batch_size=100",
    "--set", "train.jit_compile=false", "--set", "train.steps_per_checkpoint=2",
    "--set", "train.verbose=0",
    "--set", "model.retrieval_units=[16]", "--set", "model.ranker_units=[16]",
    "--set", "model.attention_units=8", "--set", "data.simulator={num_users: 200, num_items: 800}",
]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli")
    run_dir, export_dir = base / "run", base / "saved_models"
    args = [*TOY, "--run-dir", str(run_dir), "--set", f"output.export_dir={export_dir}"]
    assert main(["train", *args]) == 0
    return run_dir, export_dir, args


def test_train_records_steps_history_and_weights(run):
    run_dir, _, _ = run
    state = json.loads((run_dir / "state.json").read_text())
    assert state["status"] == "complete"
    assert state["optimizer_steps"] == state["planned_steps"] == 2 * (480 // 100)
    history = json.loads((run_dir / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    last = history[-1]
    for key in ("loss", "lcron_e2e", "lcron_sigma_retrieval", "lcron_sigma_ranking",
                "lcron_single_ranking", "joint_recall_at_10_at_20", "val_joint_recall_at_10_at_20"):
        assert key in last, sorted(last)
    assert (run_dir / "model" / "weights.index").is_file()
    assert not (run_dir / "backup").exists()  # removed once the final weights are safe
    assert (run_dir / "config.yaml").is_file() and (run_dir / "schema.json").is_file()


def test_train_again_is_a_no_op(run, capsys):
    run_dir, _, args = run
    assert main(["train", *args]) == 0
    assert "already complete" in capsys.readouterr().out


def test_train_refuses_a_different_config_in_the_same_run_dir(run, capsys):
    _, _, args = run
    assert main(["train", *args, "--set", "train.epochs=3"]) == 2
    assert "different config" in capsys.readouterr().err


def test_evaluate_export_predict(run, tmp_path, capsys):
    run_dir, export_dir, args = run
    assert main(["evaluate", "--run-dir", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "joint_recall_at_10_at_20" in out
    result = json.loads((run_dir / "eval.json").read_text())
    assert 0.0 <= result["metrics"]["joint_recall_at_10_at_20"] <= 1.0
    assert result["optimizer_steps"] == 8

    assert main(["export", "--run-dir", str(run_dir), "--version", "3"]) == 0
    assert (export_dir / "lcron" / "3" / "saved_model.pb").is_file()

    pred = tmp_path / "pred.json"
    assert main(["predict", "--run-dir", str(run_dir), "--num-requests", "2",
                 "--output", str(pred)]) == 0
    outputs = json.loads(pred.read_text())
    ids = np.asarray(outputs["selected_item_ids"])
    assert ids.shape == (2, 20)
    assert np.all(np.asarray(outputs["num_selected"]) == 20)


def test_report_writes_valid_pngs_and_markdown(run):
    run_dir, _, _ = run
    import matplotlib.image as mpimg

    assert main(["report", "--run-dir", str(run_dir)]) == 0
    report = run_dir / "report"
    for name in ("training_curves.png", "recall_by_epoch.png", "survival_hist.png"):
        data = (report / name).read_bytes()
        assert data.startswith(PNG_MAGIC), name
        img = mpimg.imread(report / name)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
        assert float(np.std(img)) > 0.01  # not a blank canvas
    md = (report / "report.md").read_text()
    assert "![survival_hist](survival_hist.png)" in md and "joint_recall" in md


def test_evaluate_without_training_fails_clearly(tmp_path, capsys):
    assert main(["evaluate", *TOY, "--run-dir", str(tmp_path / "empty")]) == 2
    assert "run `lcron-tf train`" in capsys.readouterr().err


def test_python_m_entry_point_help():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "lcron_tf.cli", "--help"], capture_output=True,
                         text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0
    for cmd in ("train", "evaluate", "export", "predict", "report", "bench"):
        assert cmd in out.stdout


def test_predict_against_a_serving_endpoint(run, capsys):
    """`predict --target` queries TF Serving; here the in-process stand-in (not TF Serving)."""
    from lcron_tf.testing.serving_standin import ServingStandIn

    run_dir, export_dir, _ = run
    assert main(["export", "--run-dir", str(run_dir), "--version", "7", "--overwrite"]) == 0
    with ServingStandIn({"lcron": export_dir / "lcron"}) as server:
        for protocol, target in (("grpc", server.grpc_target), ("rest", server.rest_url)):
            assert main(["predict", "--run-dir", str(run_dir), "--num-requests", "2",
                         "--target", target, "--protocol", protocol]) == 0
            out = capsys.readouterr().out
            assert "request 1:" in out and "20 selected" in out


def test_tensorboard_logs_loss_terms_sigma_and_recall(run):
    pytest.importorskip("tensorboard", reason="the `tensorboard` package is not installed")
    import tensorflow as tf
    from tensorflow.core.util import event_pb2

    run_dir, _, _ = run
    tags = set()
    for path in (run_dir / "tb").glob("*/events.out.tfevents.*"):
        for record in tf.data.TFRecordDataset(str(path)):
            tags |= {v.tag for v in event_pb2.Event.FromString(record.numpy()).summary.value}
    for tag in ("epoch_loss", "epoch_lcron_e2e", "epoch_lcron_single_ranking",
                "epoch_lcron_sigma_retrieval", "epoch_lcron_sigma_ranking",
                "epoch_joint_recall_at_10_at_20", "epoch_retrieval_recall_at_10_at_30"):
        assert tag in tags, sorted(tags)


def test_crash_after_the_last_checkpoint_restores_the_trained_weights(tmp_path, monkeypatch):
    """Killed after the last step's checkpoint but before `state.json` said complete."""
    import shutil

    import tensorflow as tf

    run_dir = tmp_path / "run"
    args = [*TOY, "--run-dir", str(run_dir), "--set", "train.steps_per_checkpoint=4",
            "--set", "train.validate=false", "--set", "output.tensorboard=false"]
    keep = tmp_path / "backup_copy"
    real_rmtree = shutil.rmtree

    def rmtree_keeping_backup(path, *a, **k):
        if str(path).endswith("backup"):
            shutil.copytree(path, keep)
        return real_rmtree(path, *a, **k)

    monkeypatch.setattr(shutil, "rmtree", rmtree_keeping_backup)
    assert main(["train", *args]) == 0
    monkeypatch.undo()
    want = tf.train.load_checkpoint(str(run_dir / "model" / "weights"))
    # Back to the state of a crash right after the final checkpoint (8 steps = 2 x 4).
    shutil.rmtree(run_dir / "model")
    shutil.copytree(keep, run_dir / "backup")
    state = json.loads((run_dir / "state.json").read_text())
    (run_dir / "state.json").write_text(json.dumps({**state, "status": "running"}))
    assert main(["train", *args]) == 0
    state = json.loads((run_dir / "state.json").read_text())
    assert state["status"] == "complete" and state["optimizer_steps"] == 8
    assert state["resumes"] == [8]
    got = tf.train.load_checkpoint(str(run_dir / "model" / "weights"))
    names = [n for n in want.get_variable_to_shape_map() if "VARIABLE_VALUE" in n]
    for n in names:
        np.testing.assert_array_equal(got.get_tensor(n), want.get_tensor(n), err_msg=n)
