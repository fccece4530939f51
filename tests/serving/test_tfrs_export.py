"""The reduced TFRS tutorial model: fit with string towers and the LCRON loss under XLA,
export with ``export_tfrs``, and serve strings from a process without lcron_tf / TFRS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from tfrs_tutorial import example_module, tutorial_data

from lcron_tf._keras import tf
from lcron_tf.serving.export import _has_xla_attr
from lcron_tf.serving.tfrs_export import export_tfrs


@pytest.fixture(scope="module")
def trained():
    ex = example_module()
    data = tutorial_data()
    tf.keras.utils.set_random_seed(0)
    model = ex.MovielensModel(
        data["unique_user_ids"], data["unique_movie_titles"], 1.0, 1.0, 1.0,
        jit_loss=True, embedding_dimension=8,
    )
    model.compile(optimizer=tf.keras.optimizers.Adam(0.05))  # the model step: no XLA
    lists = data["lists"]
    before = ex.joint_recall(model, lists.test)
    hist = model.fit(lists.dataset("train", 64, shuffle=True), epochs=3, verbose=0).history
    return ex, data, model, hist, before


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    ex, data, model, _, _ = trained
    base = tmp_path_factory.mktemp("tfrs_export")
    return ex.export_model(model, str(base), data["unique_movie_titles"], "tutorial_lcron")


def test_string_towers_train_with_the_lcron_loss_compiled(trained):
    ex, data, model, hist, _ = trained
    compiled = model.task.lcron._compiled_call
    assert compiled is not None and compiled._jit_compile is True
    assert compiled.experimental_get_tracing_count() >= 1
    assert np.isfinite(hist["loss"]).all()
    assert hist["joint_recall_at_10_at_20"][-1] > hist["joint_recall_at_10_at_20"][0]
    for part in ("multitask_lcron", "multitask_retrieval", "multitask_ranking"):
        assert part in hist, part
    # The tutorial's FactorizedTopK evaluation still works (tf.data, never compiled).
    test = ex.interaction_dataset(data["ratings"], data["lists"].rows["test"], 256, False)
    res = ex.tutorial_metrics(model, test)
    assert 0.0 < res["top100"] <= 1.0 and np.isfinite(res["rmse"])


@pytest.mark.slow
def test_whole_step_xla_with_lookups_in_the_model_fails_with_the_documented_error(trained):
    ex, data, _, _, _ = trained
    model = ex.MovielensModel(data["unique_user_ids"], data["unique_movie_titles"], 1.0, 1.0,
                              1.0, jit_loss=False, embedding_dimension=8)
    model.compile(optimizer=tf.keras.optimizers.Adam(0.05), jit_compile=True)
    with pytest.raises(Exception, match="XLA_CPU_JIT") as err:
        model.fit(data["lists"].dataset("train", 64), epochs=1, steps_per_epoch=1, verbose=0)
    assert "DT_STRING" in str(err.value) or "string" in str(err.value).lower()


@pytest.mark.slow
def test_whole_step_xla_with_lookups_in_tf_data_trains(trained):
    ex, data, _, _, _ = trained
    tf.keras.utils.set_random_seed(1)
    model = ex.MovielensModel(data["unique_user_ids"], data["unique_movie_titles"], 1.0, 1.0,
                              1.0, jit_loss=False, lookups_in_data=True, embedding_dimension=8)
    model.compile(optimizer=tf.keras.optimizers.Adam(0.05), jit_compile=True)
    ds = data["lists"].dataset("train", 64, shuffle=True).map(model.lookup)
    hist = model.fit(ds, epochs=2, verbose=0).history
    assert np.isfinite(hist["loss"]).all() and hist["loss"][-1] < hist["loss"][0]
    test = ex.interaction_dataset(data["ratings"], data["lists"].rows["test"], 256, False)
    res = ex.tutorial_metrics(model, test.map(model.lookup))  # evaluation without XLA
    assert 0.0 < res["top100"] <= 1.0


def _expected_recommend(model, users: list[str], titles: np.ndarray, k0: int, k1: int):
    """The recommend cascade computed from the in-memory towers with numpy."""
    q = model.user_model(tf.constant(users)).numpy()
    emb = model.movie_model(tf.constant(titles)).numpy()
    dots = q @ emb.T
    out_titles, out_scores = [], []
    for b in range(len(users)):
        top = np.argsort(-dots[b], kind="stable")[:k0]
        cand = emb[top]
        pairs = np.concatenate([np.repeat(q[b][None], len(top), 0), cand], -1)
        rank = model.rating_model(tf.constant(pairs)).numpy()[:, 0]
        keep = np.argsort(-rank, kind="stable")[:k1]
        out_titles.append([str(titles[top[i]]) for i in keep])
        out_scores.append(rank[keep].tolist())
    return out_titles, out_scores


CHILD = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("lcron_tf", "tensorflow_recommenders"):
                raise ImportError(f"{name} is blocked in this process")
            return None

    sys.meta_path.insert(0, Block())
    blocked = []
    for mod in ("lcron_tf", "tensorflow_recommenders"):
        try:
            __import__(mod)
        except ImportError:
            blocked.append(mod)
    import numpy as np
    import tensorflow as tf

    loaded = tf.saved_model.load(sys.argv[1])
    req = json.loads(sys.argv[2])
    rec = loaded.signatures["recommend"](user_id=tf.constant(req["users"]))
    cas = loaded.signatures["serving_default"](
        user_id=tf.constant(req["cascade_users"]),
        movie_title=tf.constant(req["cascade_titles"]),
        mask=tf.constant(req["cascade_mask"], tf.float32),
    )
    print("REPORT " + json.dumps({
        "blocked": blocked,
        "signatures": sorted(loaded.signatures),
        "titles": [[t.decode() for t in row] for row in rec["item_ids"].numpy()],
        "scores": rec["scores"].numpy().tolist(),
        "cascade_ids": [[t.decode() for t in row] for row in cas["selected_item_ids"].numpy()],
        "cascade_idx": cas["selected_indices"].numpy().tolist(),
        "modules": sorted(m for m in sys.modules if m.split(".")[0] in
                          ("lcron_tf", "tensorflow_recommenders")),
    }))
    """
)


def test_export_serves_strings_in_a_process_without_lcron_tf_or_tfrs(trained, exported, tmp_path):
    ex, data, model, _, _ = trained
    titles = data["unique_movie_titles"]
    path = exported
    assert path.name == "1" and path.parent.name == "tutorial_lcron"
    assert not _has_xla_attr(path)
    users = ["user_3", "user_17", "nobody"]  # the last one is out of vocabulary
    want_titles, want_scores = _expected_recommend(model, users, titles, *ex.QUOTAS)
    test = data["lists"].test
    req = {
        "users": users,
        "cascade_users": test["user_id"][:3].astype(str).tolist(),
        "cascade_titles": test["movie_title"][:3].astype(str).tolist(),
        "cascade_mask": test["mask"][:3].tolist(),
    }
    feats = {"user_id": tf.constant(req["cascade_users"]),
             "movie_title": tf.constant(req["cascade_titles"])}
    stage = model.stage_scores(feats).numpy()
    want_idx = []
    for b in range(3):
        top = np.argsort(-stage[b, 0], kind="stable")[: ex.QUOTAS[0]]
        keep = top[np.argsort(-stage[b, 1, top], kind="stable")[: ex.QUOTAS[1]]]
        want_idx.append(keep.tolist())
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TF_USE_LEGACY_KERAS")}
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = subprocess.run(
        [sys.executable, str(script), str(path), json.dumps(req)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads([x for x in proc.stdout.splitlines() if x.startswith("REPORT ")][-1][7:])
    assert report["blocked"] == ["lcron_tf", "tensorflow_recommenders"]
    assert report["modules"] == []
    assert set(report["signatures"]) == {
        "serving_default", "score_retrieval", "score_ranking", "query_embedding", "recommend"
    }
    assert report["titles"] == want_titles
    assert set(report["titles"][0]) <= set(titles.tolist())
    np.testing.assert_allclose(report["scores"], want_scores, rtol=1e-4, atol=1e-5)
    assert report["cascade_idx"] == want_idx
    assert report["cascade_ids"] == [
        [req["cascade_titles"][b][i] for i in want_idx[b]] for b in range(3)
    ]


def test_export_validates_inputs_in_the_graph(exported):
    sig = tf.saved_model.load(str(exported)).signatures["serving_default"]
    titles = tf.constant([["Title 1 (1951)", "Title 2 (1952)"]])
    with pytest.raises(tf.errors.InvalidArgumentError, match="mask"):
        sig(user_id=tf.constant(["user_1"]), movie_title=titles, mask=tf.ones([1, 3]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="movie_title"):
        sig(user_id=tf.constant(["user_1", "user_2"]), movie_title=titles, mask=tf.ones([2, 2]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="0 \\(padded\\) or 1"):
        sig(user_id=tf.constant(["user_1"]), movie_title=titles, mask=tf.constant([[1.0, 2.0]]))
    out = sig(user_id=tf.constant(["user_1"]), movie_title=titles, mask=tf.constant([[1.0, 0.0]]))
    assert out["num_selected"].numpy().tolist() == [1]
    assert out["selected_item_ids"].numpy()[0, 0] == b"Title 1 (1951)"
    assert out["selected_item_ids"].numpy()[0, 1] == b""  # empty slot


def test_export_tfrs_rejects_bad_arguments(trained, tmp_path):
    _, data, model, _, _ = trained
    q = {"user_id": tf.TensorSpec([None], tf.string)}
    c = {"movie_title": tf.TensorSpec([None, None], tf.string)}

    def score(query, cands):
        return tf.zeros(tf.shape(cands["movie_title"]))

    common = {"model_name": "m", "query_signature": q, "candidate_signature": c,
              "stages": {"a": score, "b": score}, "item_id": "movie_title"}
    with pytest.raises(ValueError, match="one quota per stage"):
        export_tfrs(model, tmp_path, quotas=(3,), **common)
    with pytest.raises(ValueError, match="item_id"):
        export_tfrs(model, tmp_path, quotas=(3, 2), **{**common, "item_id": "title"})
    with pytest.raises(ValueError, match="query_tower"):
        export_tfrs(model, tmp_path, quotas=(3, 2), corpus={"movie_title": ["x"]}, **common)
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())
