"""CascadeModel under the mixed_float16 policy: float16 stage models, float32 loss, real updates.

The stages here are minimal float16 scorers (an item embedding and a dense layer); the
built-in towers' own mixed-precision support is tested with the towers.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from models_synth import make_batch, make_schema

from lcron_tf._keras import keras
from lcron_tf.models import CascadeModel

SCHEMA = make_schema()


class ItemScorer(keras.layers.Layer):
    """``batch -> [B, N]`` scores from the candidates' features (computes in the policy dtype)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.emb = keras.layers.Embedding(8, 4)
        self.hidden = keras.layers.Dense(8, activation="relu")
        self.out = keras.layers.Dense(1)

    def call(self, batch):
        x = tf.reshape(self.emb(batch["item_features"]), [-1, SCHEMA.list_size, 12])
        return tf.squeeze(self.out(self.hidden(x)), -1)


def _first_step_update(policy: str) -> tuple[float, list[float], str]:
    """Size of the first SGD update, the losses of 25 steps and the towers' compute dtype."""
    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        model = CascadeModel([ItemScorer(name="s1"), ItemScorer(name="s2")], SCHEMA.quotas,
                             gt_num=SCHEMA.gt_num)
        batch = make_batch(SCHEMA, 64, seed=3)
        model.compile(optimizer=keras.optimizers.SGD(0.5))
        model(batch)
        before = [v.numpy().copy() for v in model.trainable_variables]
        ds = tf.data.Dataset.from_tensors(batch)
        losses = model.fit(ds, verbose=0).history["loss"]
        step = sum(
            float(np.abs(v.numpy() - b).sum()) for v, b in zip(model.trainable_variables, before)
        )
        losses += model.fit(ds.repeat(24), verbose=0).history["loss"]
        losses += model.fit(ds, verbose=0).history["loss"]
        dtype = model(batch).dtype, model.stage_models[0](batch).dtype
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return step, losses, dtype


def test_mixed_float16_trains_like_float32():
    step32, losses32, dtype32 = _first_step_update("float32")
    step16, losses16, dtype16 = _first_step_update("mixed_float16")
    assert dtype32 == (tf.float32, tf.float32)
    assert dtype16 == (tf.float32, tf.float16)  # float16 stage scores, float32 into the loss
    assert np.all(np.isfinite(losses16))
    # The loss scale (2**15) must not leak into the update.
    assert 0.5 < step16 / step32 < 2.0, (step16, step32)
    assert losses16[-1] < losses16[0] - 0.05, losses16
    assert abs(losses16[0] - losses32[0]) < 0.05
    assert tf.keras.mixed_precision.global_policy().name == "float32"
