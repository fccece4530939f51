"""Load the export in a fresh Python process in which ``lcron_tf`` cannot be imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
from serving_helpers import SCHEMA, corpus

from lcron_tf._keras import tf
from lcron_tf.layers import CascadeTopK
from lcron_tf.ops.ranking_metrics import hard_cascade
from lcron_tf.serving.export import model_stages, retrieval_tower

CHILD = textwrap.dedent(
    """
    import sys
    sys.modules["lcron_tf"] = None  # any `import lcron_tf` now raises ImportError
    import json, pathlib
    try:
        import lcron_tf  # noqa: F401
        importable = True
    except ImportError:
        importable = False
    import numpy as np
    import tensorflow as tf

    export_dir, data_dir = sys.argv[1], pathlib.Path(sys.argv[2])
    loaded = tf.saved_model.load(export_dir)
    report = {"lcron_importable": importable, "signatures": sorted(loaded.signatures),
              "tfrs_loaded": "tensorflow_recommenders" in sys.modules, "results": {}}
    for path in sorted(data_dir.glob("*.inputs.npz")):
        name = path.name[: -len(".inputs.npz")]
        inputs = dict(np.load(path))
        want = dict(np.load(data_dir / f"{name}.expected.npz"))
        got = loaded.signatures[name](**{k: tf.constant(v) for k, v in inputs.items()})
        res = {}
        for key, value in want.items():
            g = got[key].numpy()
            res[key] = {
                "shape_ok": list(g.shape) == list(value.shape),
                "dtype": str(g.dtype),
                "max_abs_diff": float(np.max(np.abs(g.astype(np.float64) - value)))
                if g.shape == value.shape and g.size else 0.0,
            }
        res["_outputs"] = sorted(got)
        report["results"][name] = res
    print("REPORT " + json.dumps(report))
    """
)


def _expected(model, batch: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """Every signature's outputs, computed from the in-memory model (not the export)."""
    feed = {k: tf.constant(v) for k, v in batch.items()}
    scores = model(feed, training=False)
    stages = tf.unstack(scores, axis=1)
    idx, _ = CascadeTopK(SCHEMA.quotas)(stages, mask=feed["mask"])
    idx = idx.numpy()
    last = scores.numpy()[:, -1]
    valid = idx >= 0
    out = {
        "serving_default": {
            "stage_scores": scores.numpy(),
            "selected_indices": idx,
            "selected_item_ids": np.where(
                valid, np.take_along_axis(batch["item_id"], np.maximum(idx, 0), 1), 0
            ),
            "final_scores": np.where(valid, np.take_along_axis(last, np.maximum(idx, 0), 1), 0),
            "num_selected": valid.sum(1),
            "survival_mask": tf.stack(
                hard_cascade(stages, SCHEMA.quotas, feed["mask"]), axis=1
            ).numpy(),
        }
    }
    for stage, name in zip(*model_stages(model)):
        out[f"score_{name}"] = {"scores": stage(feed, training=False).numpy()}
    user = {k: feed[k] for k in ("user_id", "user_features", "history")}
    q = retrieval_tower(model).query_embedding(user).numpy()
    out["query_embedding"] = {"query_embedding": q}
    c = corpus()
    emb = retrieval_tower(model).candidate_embedding(
        tf.constant(c["item_id"]), tf.constant(c["item_features"])
    ).numpy()
    s = q @ emb.T
    top = np.argsort(-s, axis=1, kind="stable")[:, :5]
    out["retrieve"] = {"scores": np.take_along_axis(s, top, 1), "item_ids": c["item_id"][top]}
    return out


def test_fresh_process_without_lcron_tf(exported: Path, toy_model, request_batch, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    expected = _expected(toy_model, request_batch)
    user_keys = ("user_id", "user_features", "history")
    for name, outputs in expected.items():
        keys = user_keys if name in ("query_embedding", "retrieve") else request_batch
        np.savez(data / f"{name}.inputs.npz", **{k: request_batch[k] for k in keys})
        np.savez(data / f"{name}.expected.npz", **outputs)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TF_USE_LEGACY_KERAS")}
    proc = subprocess.run(
        [sys.executable, str(script), str(exported), str(data)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("REPORT ")][-1]
    report = json.loads(line[len("REPORT "):])
    assert report["lcron_importable"] is False
    assert report["tfrs_loaded"] is False
    assert set(report["signatures"]) == set(expected)
    for name, res in report["results"].items():
        assert set(res["_outputs"]) >= set(expected[name]), name
        for key, r in res.items():
            if key == "_outputs":
                continue
            assert r["shape_ok"], (name, key)
            assert r["max_abs_diff"] <= 1e-5, (name, key, r)
    assert report["results"]["serving_default"]["selected_indices"]["dtype"] == "int32"
