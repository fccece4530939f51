"""Export layout, atomicity, signatures and in-graph validation (in-process)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from serving_helpers import MODEL_NAME, SCHEMA

from lcron_tf._keras import tf
from lcron_tf.serving.export import (
    METADATA_FILE,
    WARMUP_FILE,
    _has_xla_attr,
    cascade_select,
    export,
    retrieval_tower,
    sample_request,
    validate_inputs,
)


def _feed(batch):
    return {k: tf.constant(v) for k, v in batch.items()}


def _np_cascade(stage_scores: np.ndarray, mask: np.ndarray, quotas) -> dict[str, np.ndarray]:
    """Reference of the hard cascade: stable order, ties to the lower index."""
    b, s, n = stage_scores.shape
    k_last = quotas[-1]
    sel = -np.ones((b, k_last), np.int64)
    survival = np.zeros((b, s, n), np.float32)
    for i in range(b):
        alive = np.flatnonzero(mask[i] > 0)
        for st in range(s):
            order = sorted(alive, key=lambda j, st=st: (-stage_scores[i, st, j], j))
            alive = np.asarray(order[: quotas[st]], np.int64)
            survival[i, st, alive] = 1
        sel[i, : len(alive)] = alive
    return {"selected_indices": sel, "survival_mask": survival}


def test_layout_metadata_and_no_xla(exported: Path):
    assert exported.name == "1" and exported.parent.name == MODEL_NAME
    assert (exported / "saved_model.pb").is_file()
    assert (exported / "variables").is_dir()
    meta = json.loads((exported / "assets.extra" / METADATA_FILE).read_text())
    assert meta["quotas"] == [6, 3] and meta["max_list_size"] == SCHEMA.list_size
    assert set(meta["signatures"]) == {
        "serving_default", "score_retrieval", "score_ranking", "query_embedding", "retrieve",
    }
    from tensorflow_serving.apis import prediction_log_pb2

    records = list(tf.data.TFRecordDataset(str(exported / "assets.extra" / WARMUP_FILE)))
    assert len(records) == 1
    log = prediction_log_pb2.PredictionLog.FromString(records[0].numpy())
    assert log.predict_log.request.model_spec.signature_name == "serving_default"
    assert set(log.predict_log.request.inputs) == {
        "user_id", "user_features", "history", "item_id", "item_features", "mask",
    }
    assert not _has_xla_attr(exported)
    # Nothing but integer versions is left in the model directory.
    assert sorted(os.listdir(exported.parent)) == ["1"]


def test_loaded_matches_in_memory_model(loaded, toy_model, request_batch):
    out = {k: v.numpy() for k, v in loaded.signatures["serving_default"](
        **_feed(request_batch)).items()}
    want_scores = toy_model(_feed(request_batch), training=False).numpy()
    np.testing.assert_allclose(out["stage_scores"], want_scores, rtol=1e-5, atol=1e-6)
    ref = _np_cascade(want_scores, request_batch["mask"], SCHEMA.quotas)
    np.testing.assert_array_equal(out["selected_indices"], ref["selected_indices"])
    np.testing.assert_array_equal(out["survival_mask"], ref["survival_mask"])
    idx = out["selected_indices"]
    np.testing.assert_array_equal(
        out["selected_item_ids"], np.take_along_axis(request_batch["item_id"], idx, 1)
    )
    np.testing.assert_allclose(
        out["final_scores"], np.take_along_axis(want_scores[:, -1], idx, 1), rtol=1e-5
    )
    assert out["selected_indices"].dtype == np.int32
    # Final order: best first by the last stage.
    assert np.all(np.diff(out["final_scores"], axis=1) <= 0)
    for i, name in enumerate(["retrieval", "ranking"]):
        got = loaded.signatures[f"score_{name}"](**_feed(request_batch))["scores"].numpy()
        np.testing.assert_allclose(got, want_scores[:, i], rtol=1e-5, atol=1e-6)


def test_retrieval_signatures(loaded, toy_model, request_batch):
    from serving_helpers import corpus

    user = {k: tf.constant(request_batch[k]) for k in ("user_id", "user_features", "history")}
    q = loaded.signatures["query_embedding"](**user)["query_embedding"].numpy()
    want_q = retrieval_tower(toy_model).query_embedding(user).numpy()
    np.testing.assert_allclose(q, want_q, rtol=1e-5, atol=1e-6)
    got = loaded.signatures["retrieve"](**user)
    c = corpus()
    emb = retrieval_tower(toy_model).candidate_embedding(
        tf.constant(c["item_id"]), tf.constant(c["item_features"])
    ).numpy()
    scores = q @ emb.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(got["item_ids"].numpy(), c["item_id"][top])
    np.testing.assert_allclose(
        got["scores"].numpy(), np.take_along_axis(scores, top, 1), rtol=1e-5, atol=1e-5
    )


def test_dynamic_list_size_smaller_than_quota(loaded, toy_model):
    batch = sample_request(SCHEMA, 2, list_size=2, seed=3, pad_last=1)  # 1 real candidate
    out = loaded.signatures["serving_default"](**_feed(batch))
    assert out["stage_scores"].shape == (2, 2, 2)
    np.testing.assert_array_equal(out["selected_indices"].numpy(), [[0, -1, -1], [0, -1, -1]])
    np.testing.assert_array_equal(out["num_selected"].numpy(), [1, 1])
    np.testing.assert_array_equal(out["selected_item_ids"].numpy()[:, 1:], 0)
    np.testing.assert_allclose(
        out["stage_scores"].numpy(), toy_model(_feed(batch)).numpy(), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda b: b.update(item_id=np.zeros((3, 13), np.int64)), "`item_id`"),
        (lambda b: b.update(user_id=np.zeros((2,), np.int64)), r"B = len\(user_id\)"),
        (lambda b: b.update(item_features=b["item_features"][..., :1]), "`item_features`"),
        (lambda b: b.update(history=b["history"][..., None]), "`history`"),
        (lambda b: b.update(mask=b["mask"][:, :5]), "`mask`"),
        (lambda b: b["item_id"].__setitem__((0, 0), 10_000), "`item_id` has ids outside"),
        (lambda b: b["user_features"].__setitem__((0, 1), 5), "`user_features` has ids"),
        (lambda b: b["mask"].__setitem__((0, 0), 2.0), "`mask` must be 0"),
    ],
    ids=["n_beyond_export", "batch_mismatch", "wrong_F", "wrong_rank", "mask_n", "oov_item",
         "oov_user_feature", "mask_value"],
)
def test_in_graph_validation(loaded, request_batch, change, needle):
    batch = {k: v.copy() for k, v in request_batch.items()}
    change(batch)
    with pytest.raises(tf.errors.InvalidArgumentError, match=needle) as info:
        loaded.signatures["serving_default"](**_feed(batch))
    if needle == "`item_id`":
        assert "at most 12 candidates" in str(info.value)


def test_validate_inputs_eager_restores_static_shapes():
    batch = _feed(sample_request(SCHEMA, 2))
    out = validate_inputs(batch, SCHEMA, max_list_size=12, fixed_list_size=True)
    assert out["item_features"].shape.as_list() == [2, 12, 2]
    bad = dict(batch, item_id=tf.zeros([2, 11], tf.int64))
    with pytest.raises(tf.errors.InvalidArgumentError, match="exactly 12 candidates"):
        validate_inputs(bad, SCHEMA, max_list_size=12, fixed_list_size=True)


def test_cascade_select_matches_reference():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(4, 2, 9)).astype(np.float32)
    scores[0, 0, :3] = 1.0  # ties
    mask = (rng.random((4, 9)) > 0.3).astype(np.float32)
    out = cascade_select(tf.constant(scores), tf.constant(mask), (5, 3))
    ref = _np_cascade(scores, mask, (5, 3))
    np.testing.assert_array_equal(out["selected_indices"].numpy(), ref["selected_indices"])
    np.testing.assert_array_equal(out["survival_mask"].numpy(), ref["survival_mask"])


def test_versions_and_overwrite(exported: Path, toy_model):
    base = exported.parent.parent
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export(toy_model, base, 1, model_name=MODEL_NAME)
    # Auto version in a separate model dir, then an explicit overwrite of it.
    p2 = export(toy_model, base, model_name="other", verify=False, warmup=False)
    assert p2.name == "1"
    p3 = export(toy_model, base, model_name="other", verify=False, warmup=False)
    assert p3.name == "2"
    stamp = (p3 / "saved_model.pb").stat().st_mtime_ns
    p4 = export(toy_model, base, 2, model_name="other", overwrite=True, verify=False,
                warmup=False, dynamic_list_size=False)
    assert p4 == p3 and (p4 / "saved_model.pb").stat().st_mtime_ns != stamp
    assert sorted(os.listdir(base / "other")) == ["1", "2"]
    loaded = tf.saved_model.load(str(p4))
    spec = loaded.signatures["serving_default"].structured_input_signature[1]["item_id"]
    assert spec.shape.as_list() == [None, 12]


def test_export_is_atomic(toy_model, tmp_path, monkeypatch):
    real_save = tf.saved_model.save

    def failing_save(obj, export_dir, *args, **kwargs):
        Path(export_dir, "saved_model.pb").write_bytes(b"partial")
        (Path(export_dir) / "variables").mkdir()
        raise OSError("disk full (injected)")

    monkeypatch.setattr(tf.saved_model, "save", failing_save)
    with pytest.raises(OSError, match="injected"):
        export(toy_model, tmp_path, 3, model_name=MODEL_NAME)
    assert os.listdir(tmp_path / MODEL_NAME) == []
    # A failing verification publishes nothing either.
    monkeypatch.setattr(tf.saved_model, "save", real_save)
    # `lcron_tf.serving.export` the attribute is the function; the module is in sys.modules.
    export_module = sys.modules["lcron_tf.serving.export"]

    def failing_verify(*args, **kwargs):
        raise RuntimeError("export check failed (injected)")

    monkeypatch.setattr(export_module, "_verify", failing_verify)
    with pytest.raises(RuntimeError, match="injected"):
        export(toy_model, tmp_path, 3, model_name=MODEL_NAME, warmup=False)
    assert os.listdir(tmp_path / MODEL_NAME) == []


def test_three_stage_export(tmp_path):
    """DSSM -> MLP -> DIN: one score signature per stage; verify=True compares the reload."""
    import dataclasses

    from lcron_tf.models import CascadeModel

    schema = dataclasses.replace(SCHEMA, quotas=(8, 5, 3))
    model = CascadeModel.default(
        schema, 3, retrieval_units=(8,), pre_ranker_units=(8,), ranker_units=(8,),
        attention_units=4,
    )
    model(_feed(sample_request(schema, 2)))
    path = export(model, tmp_path, warmup=False)
    assert path == tmp_path / "cascade_model" / "1"
    loaded = tf.saved_model.load(str(path))
    assert {"score_retrieval", "score_pre_ranking", "score_ranking"} <= set(loaded.signatures)
    out = loaded.signatures["serving_default"](**_feed(sample_request(schema, 2, seed=5)))
    assert out["stage_scores"].shape == (2, 3, 12)
    assert out["survival_mask"].numpy().sum(axis=2).tolist() == [[8, 5, 3], [8, 5, 3]]
