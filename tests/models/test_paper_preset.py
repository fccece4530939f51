"""The ``paper`` preset: the official kwai/LCRON models field by field (size, fields, padding)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from models_synth import make_batch, make_schema

from lcron_tf._keras import keras
from lcron_tf.data.recflow import recflow_schema
from lcron_tf.models import CascadeModel, DinRanker, PaperDin, PaperDssm, PaperMlp, field_layout
from lcron_tf.schema import HISTORY_FEATURES

# RecFlow-like id counts (others/id_cnt.pkl); small enough that the tables build fast.
ID_CNT = {"user_id": 3000, "device_id": 2000, "age": 8, "gender": 3, "province": 79,
          "video_id": 20000, "author_id": 5000, "category_level_one": 140,
          "category_level_two": 784, "upload_type": 40}
TEN_FIELDS = ("user_id", "device_id", "gender", "age", "province", "video_id", "author_id",
              "category_level_two", "category_level_one", "upload_type")


def official_parameter_count(id_cnt: dict, num_stages: int, d: int = 8) -> int:
    """Trainable parameters of the official models, from lcron_method.md §6 alone.

    Every model has its own tables: id_cnt + 2 rows for the ten id fields, 9 / 26 / 62 for
    wday / hour / minute (shared by request and upload time); nn.Linear has in*out + out.
    Plus one UWL sigma per stage (LcronLossModel).
    """

    def linear(i: int, o: int) -> int:
        return i * o + o

    tables = d * (sum(id_cnt[f] + 2 for f in TEN_FIELDS) + 9 + 26 + 62)
    dssm = (tables + linear(13 * d, 128) + linear(128, 64) + linear(64, 32)
            + linear(8 * d, 128) + linear(128, 64) + linear(64, 32))
    din = (tables + linear(10 * d, 80) + linear(80, 1) + linear(21 * d, 128)
           + linear(128, 128) + linear(128, 32) + linear(32, 1))
    mlp = tables + linear(21 * d, 128) + linear(128, 64) + linear(64, 32) + linear(32, 1)
    return dssm + din + (mlp if num_stages == 3 else 0) + num_stages


def random_batch(schema, b: int = 4, seed: int = 0, empty_history_row: int | None = None):
    """A valid batch of ``schema`` with a partly padded history and a padded last slot."""
    rng = np.random.default_rng(seed)
    n, h = schema.list_size, schema.history_length

    def cols(vocabs, shape):
        return np.stack([rng.integers(1, v, shape) for v in vocabs], -1).astype(np.int64)

    history = rng.integers(1, schema.item_vocab, (b, h))
    history[:, : h // 3] = 0  # left padding
    if empty_history_row is not None:
        history[empty_history_row] = 0
    mask = np.ones((b, n), np.float32)
    mask[:, -1] = 0
    out = {
        "user_id": rng.integers(1, schema.user_vocab, b),
        "user_features": cols(schema.user_feature_vocabs, (b,)),
        "history": history,
        "item_id": rng.integers(1, schema.item_vocab, (b, n)) * mask.astype(np.int64),
        "item_features": cols(schema.item_feature_vocabs, (b, n)) * mask[..., None].astype(int),
        "label": rng.normal(size=(b, n)).astype(np.float32) * mask,
        "mask": mask,
        "stage_group": np.where(mask > 0, np.arange(n) // 10, -1).astype(np.int32),
    }
    if schema.history_feature_names:
        hf = cols(schema.history_feature_vocabs, (b, h))
        out[HISTORY_FEATURES] = hf * (history > 0)[..., None]
    return {k: tf.constant(v) for k, v in out.items()}


def trainable_count(model) -> int:
    return sum(v.shape.num_elements() for v in model.trainable_variables)


@pytest.mark.parametrize("num_stages", [2, 3])
def test_parameter_count_equals_the_official_models(num_stages):
    schema = recflow_schema(ID_CNT, num_stages)
    model = CascadeModel.default(schema, num_stages)
    model(random_batch(schema, 2))
    want = official_parameter_count(ID_CNT, num_stages)
    got = trainable_count(model)
    assert abs(got - want) <= 0.03 * want, (got, want)
    assert got == want  # same tables, same layers: equal, not only within 3 %
    lite = CascadeModel.default(schema, num_stages, preset="lite")
    lite(random_batch(schema, 2))
    assert trainable_count(lite) != want  # the lite preset is a different model


@pytest.mark.parametrize("num_stages", [2, 3])
def test_layer_widths_are_the_official_ones(num_stages):
    schema = recflow_schema(ID_CNT, num_stages)
    model = CascadeModel.default(schema, num_stages)
    model(random_batch(schema, 2))
    dssm, *middle, din = model.stage_models
    assert isinstance(dssm, PaperDssm) and isinstance(din, PaperDin)
    assert dssm.user_tower.layers[0].kernel.shape == (104, 128)  # 13 d
    assert dssm.item_tower.layers[0].kernel.shape == (64, 128)  # 8 d
    assert [layer.units for layer in dssm.user_tower.layers] == [128, 64, 32]
    assert din.attention.layers[0].kernel.shape == (80, 80)  # [seq 5 d || candidate 5 d]
    assert din.head.layers[0].kernel.shape == (168, 128)  # 21 d
    assert [layer.units for layer in din.head.layers] == [128, 128, 32, 1]
    if num_stages == 3:
        assert isinstance(middle[0], PaperMlp)
        assert middle[0].head.layers[0].kernel.shape == (168, 128)
        assert [layer.units for layer in middle[0].head.layers] == [128, 64, 32, 1]
    # 13 tables per model: request and upload time share wday / hour / minute.
    layout = field_layout(schema)
    assert len(layout.tables) == 13
    assert layout.item[-3:] == ("user/request_wday", "user/request_hour", "user/request_minute")
    assert layout.history == ("item_id", "item/author_id", "item/category_level_two",
                              "item/category_level_one", "item/upload_type")
    # Separate tables per model.
    tables = [s.embedding.embeddings for s in model.stage_models]
    assert len({id(t) for t in tables}) == num_stages


def _columns(schema):
    """(key, column) of every input field; column None = the whole [B] / [B, N] / [B, H] key."""
    out = [("user_id", None), ("item_id", None), ("history", None)]
    out += [("user_features", c) for c in range(schema.num_user_features)]
    out += [("item_features", c) for c in range(schema.num_item_features)]
    out += [(HISTORY_FEATURES, c) for c in range(schema.num_history_features)]
    return out


def _perturbed(batch, schema, key, column):
    x = batch[key].numpy().copy()
    vocab = {"user_id": schema.user_vocab, "item_id": schema.item_vocab,
             "history": schema.item_vocab}.get(key)
    if column is None:
        x = np.where(x > 0, x % (vocab - 1) + 1, 0)
    else:
        vocab = {"user_features": schema.user_feature_vocabs,
                 "item_features": schema.item_feature_vocabs,
                 HISTORY_FEATURES: schema.history_feature_vocabs}[key][column]
        col = x[..., column]
        x[..., column] = np.where(col > 0, col % (vocab - 1) + 1, 0)
    return {**batch, key: tf.constant(x)}


def test_every_tower_reads_every_official_field():
    """Changing any field (request time and context, user, every item field, every history
    field) changes the scores of DSSM, MLP and DIN, as in the official models."""
    schema = recflow_schema(ID_CNT, 3)
    keras.utils.set_random_seed(0)
    model = CascadeModel.default(schema, 3)
    batch = random_batch(schema, 3)
    base = model(batch).numpy()[..., :-1]  # the padded last slot is not scored
    for key, column in _columns(schema):
        out = model(_perturbed(batch, schema, key, column)).numpy()[..., :-1]
        changed = np.abs(out - base).max(axis=(0, 2))  # per stage
        assert (changed > 1e-6).all(), (key, column, changed)


def test_padding_rows_are_zero_and_stay_zero_under_adam():
    schema = recflow_schema(ID_CNT, 2)
    keras.utils.set_random_seed(1)
    model = CascadeModel.default(schema, 2, metrics=[])
    model.compile(keras.optimizers.Adam(0.05))
    batch = random_batch(schema, 8)
    model(batch)
    tables = [s.embedding for s in model.stage_models]
    rows = [t.frozen_rows for t in tables]
    assert len(rows[0]) == 13  # row 0 of every table
    before = [t.embeddings.numpy().copy() for t in tables]
    for t, r in zip(before, rows):
        assert (t[r] == 0).all() and (np.abs(t).sum(axis=1) > 0).sum() == len(t) - len(r)
    for _ in range(3):
        model.train_step(batch)
    for t, r, b in zip(tables, rows, before):
        after = t.embeddings.numpy()
        assert (after[r] == 0).all()
        assert (after != b).any(axis=1).sum() > 20  # real rows did move


def test_padding_ids_option_freezes_more_rows():
    """``padding_ids`` reproduces the official cate1 quirk (raw category 2 = id 3 here)."""
    schema = recflow_schema(ID_CNT, 2)
    din = PaperDin(schema, padding_ids={"category_level_one": (0, 3)})
    offset = din.embedding.offsets["item/category_level_one"]
    assert {offset, offset + 3} <= set(din.embedding.frozen_rows)
    assert (din.embedding.embeddings.numpy()[[offset, offset + 3]] == 0).all()
    with pytest.raises(ValueError, match="neither a field"):
        PaperDin(schema, padding_ids={"no_such_field": (1,)})


def test_empty_history_gives_finite_scores_and_padding_adds_nothing():
    schema = recflow_schema(ID_CNT, 2)
    keras.utils.set_random_seed(2)
    din, dssm = PaperDin(schema), PaperDssm(schema)
    batch = random_batch(schema, 3, empty_history_row=1)
    for tower in (din, dssm):
        out = tower(batch).numpy()
        assert out.shape == (3, 40) and np.isfinite(out).all()
    # Dropping the padded history positions (the first 50 // 3) changes nothing: DSSM's mean
    # and DIN's softmax ignore padding.
    short = {**batch, "history": batch["history"][:, 16:],
             HISTORY_FEATURES: batch[HISTORY_FEATURES][:, 16:]}
    short_schema = recflow_schema(ID_CNT, 2, history_length=34)
    for cls in (PaperDin, PaperDssm):
        keras.utils.set_random_seed(3)
        a = cls(schema)
        keras.utils.set_random_seed(3)
        b = cls(short_schema)
        a(batch), b(short)
        b.set_weights(a.get_weights())
        np.testing.assert_allclose(a(batch).numpy(), b(short).numpy(), rtol=1e-5, atol=1e-6)


def test_degrades_on_a_schema_without_history_fields():
    """Unnamed fields, no history fields (MovieLens/MSLR-like): history items by id only."""
    schema = make_schema()
    model = CascadeModel.default(schema, 2, emb_dim=4, retrieval_units=(8, 4),
                                 ranker_units=(8,), attention_units=4)
    batch = make_batch(schema, 16)
    assert model(batch).shape == (16, 2, schema.list_size)
    assert model.stage_models[0].layout.history == ("item_id",)
    assert model.stage_models[1].attention.layers[0].kernel.shape == (8, 4)  # [id || id]
    lite = CascadeModel.default(schema, 2, preset="lite", emb_dim=4, retrieval_units=(8, 4),
                                ranker_units=(8,), attention_units=4)
    assert isinstance(lite.stage_models[1], DinRanker)
    with pytest.raises(ValueError, match="preset"):
        CascadeModel.default(schema, 2, preset="official")


def test_tiny_fit_reduces_the_loss():
    from lcron_tf.data import simulate

    schema, arrays = simulate(num_requests=384, num_users=100, num_items=600, history_length=8,
                              user_log_length=24, retrieval_size=120, prerank_keep=60,
                              coarse_keep=40, rank_keep=20)
    keras.utils.set_random_seed(0)
    model = CascadeModel.default(schema, 2, retrieval_units=(32, 16), ranker_units=(32, 16),
                                 attention_units=16)
    model.compile(keras.optimizers.Adam(0.01))  # XLA == eager: test_cascade_model.py
    ds = tf.data.Dataset.from_tensor_slices(arrays).batch(64, drop_remainder=True)
    loss = model.fit(ds, epochs=3, verbose=0).history["loss"]
    assert loss[-1] < loss[0] - 0.05, loss


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_towers_float32_loss(policy):
    schema = make_schema()
    keras.utils.set_random_seed(0)
    model = CascadeModel.default(schema, 2, emb_dim=4, retrieval_units=(8, 4),
                                 ranker_units=(8,), attention_units=4, mixed_precision=policy)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored
    assert all(s.dtype_policy.name == policy for s in model.stage_models)
    model.compile(keras.optimizers.Adam(0.01))
    assert isinstance(model.optimizer, keras.mixed_precision.LossScaleOptimizer) == (
        policy == "mixed_float16")
    batch = make_batch(schema, 32)
    scores = model(batch)
    assert scores.dtype == tf.float32
    assert all(v.dtype == tf.float32 for v in model.trainable_variables)
    low = tf.bfloat16 if policy == "mixed_bfloat16" else tf.float16
    assert model.stage_models[1](batch).dtype == low
    logs = model.train_step({k: tf.constant(v) for k, v in batch.items()})
    assert np.isfinite(float(logs["loss"])) and logs["loss"].dtype == tf.float32
