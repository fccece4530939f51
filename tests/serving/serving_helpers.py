"""Shared helpers of the serving tests (a small real ``CascadeModel``, a corpus)."""

from __future__ import annotations

import numpy as np

import lcron_tf  # noqa: F401  (binds Keras 2 first)
from lcron_tf._keras import tf
from lcron_tf.models import CascadeModel
from lcron_tf.schema import CascadeSchema
from lcron_tf.serving.export import sample_request

SCHEMA = CascadeSchema(
    list_size=12,
    history_length=5,
    user_vocab=50,
    item_vocab=200,
    user_feature_vocabs=(7, 5),
    item_feature_vocabs=(11, 4),
    stage_groups=("pos", "neg"),
    gt_num=2,
    quotas=(6, 3),
    name="toy",
)
MODEL_NAME = "lcron_toy"


def build_model(schema: CascadeSchema = SCHEMA, seed: int = 0):
    """``CascadeModel.default(schema, 2)`` (DSSM retrieval -> DIN ranking), built on a sample."""
    tf.keras.utils.set_random_seed(seed)
    model = CascadeModel.default(
        schema, 2, retrieval_units=(16, 8), ranker_units=(16, 8), attention_units=8,
        name=MODEL_NAME,
    )
    batch = {k: tf.constant(v) for k, v in sample_request(schema, 2).items()}
    model(batch, training=False)
    return model


def corpus(schema: CascadeSchema = SCHEMA, size: int = 40) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    ids = np.arange(1, size + 1, dtype=np.int64)
    feats = np.stack([rng.integers(0, v, size) for v in schema.item_feature_vocabs], -1)
    return {"item_id": ids, "item_features": feats.astype(np.int64)}
