"""prefetch_to_device: a no-op without a GPU, a working fit input on an explicit device."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from lcron_tf._keras import keras
from lcron_tf.data.device import prefetch_to_device


def test_without_gpu_the_dataset_is_unchanged_and_explicit_device_works():
    ds = tf.data.Dataset.from_tensor_slices({"x": np.arange(8.0)[:, None], "y": np.ones(8)})
    ds = ds.batch(4)
    if not tf.config.list_logical_devices("GPU"):
        assert prefetch_to_device(ds) is ds
    on_cpu = prefetch_to_device(ds, "/cpu:0")
    assert [b["x"].shape[0] for b in on_cpu] == [4, 4]
    model = keras.Sequential([keras.layers.Dense(1)])
    model.compile("sgd", loss="mse")
    pairs = prefetch_to_device(ds.map(lambda b: (b["x"], b["y"])), "/cpu:0")
    history = model.fit(pairs, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2
