"""Keras classes over the LCRON core: values, config, serialisation, training."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from lcron_examples import TWO_STAGE, reference_example

from lcron_tf import losses
from lcron_tf._keras import keras
from lcron_tf.layers import UncertaintyWeighting

CLASSES = [losses.LcronLoss, losses.CascadeRecallLoss, losses.StageTopKLoss]


def test_lcron_loss_reproduces_official_total_at_sigma_one():
    logits, labels, mask = reference_example(2)
    loss = losses.LcronLoss(mode="reference")
    value = loss({"labels": labels, "mask": mask}, np.stack(logits, axis=1))
    np.testing.assert_allclose(float(value), TWO_STAGE["total"], atol=1e-5)
    np.testing.assert_allclose(
        float(losses.CascadeRecallLoss(mode="reference")({"labels": labels, "mask": mask}, logits)),
        TWO_STAGE["e2e"],
        atol=1e-5,
    )
    np.testing.assert_allclose(
        float(losses.StageTopKLoss(mode="reference")({"labels": labels, "mask": mask}, logits)),
        sum(TWO_STAGE["single"]),
        atol=1e-5,
    )


def test_label_tensor_with_negative_padding_equals_dict_form():
    logits, labels, mask = reference_example(2)
    padded = np.where(mask > 0, labels, -1.0).astype(np.float32)
    for cls in CLASSES:
        a = cls()(padded, logits)
        b = cls()({"labels": labels, "mask": mask}, logits)
        np.testing.assert_allclose(float(a), float(b), rtol=1e-6)


def test_sample_weight_per_request():
    logits, labels, mask = reference_example(2)
    y = {"labels": labels, "mask": mask}
    loss = losses.LcronLoss(reduction="none")
    per = loss(y, logits).numpy()
    weighted = losses.LcronLoss()(y, logits, sample_weight=np.array([1.0, 0.0])).numpy()
    np.testing.assert_allclose(weighted, per[0] / 2, rtol=1e-6)


@pytest.mark.parametrize("cls", CLASSES)
def test_config_round_trip_and_serialization(cls):
    loss = cls(
        gt_num=5,
        stage_k=[7, 6],
        tau=3.0,
        sort="soft",
        mode="reference",
        impl="lean",
        label_matrix="binary",
        name="x",
    )
    config = loss.get_config()
    clone = cls.from_config(config)
    assert clone.get_config() == config
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(restored) is cls and restored.get_config() == config
    logits, labels, mask = reference_example(2)
    y = {"labels": labels, "mask": mask}
    np.testing.assert_allclose(float(restored(y, logits)), float(loss(y, logits)), rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(tau=0), "tau"),
        (dict(gt_num=0), "gt_num"),
        (dict(stage_k=[3, 0]), "stage_k"),
        (dict(sort="x"), "sort"),
        (dict(mode="x"), "mode"),
        (dict(label_matrix="x"), "label_matrix"),
    ],
)
def test_constructor_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        losses.LcronLoss(**kwargs)


def test_uncertainty_weighting_is_never_nan():
    layer = UncertaintyWeighting()
    out = layer(tf.constant([[0.3, 0.2]]))
    np.testing.assert_allclose(out.numpy(), [0.25], rtol=1e-6)  # 0.5 * (0.3 + 0.2) + ln 1
    for value in (-30.0, 30.0):
        layer.log_sigma.assign([value, -value])
        with tf.GradientTape() as tape:
            out = layer(tf.constant([[0.3, 0.2]]))
        assert np.all(np.isfinite(out.numpy()))
        assert np.all(np.isfinite(tape.gradient(out, layer.log_sigma).numpy()))
    with pytest.raises(ValueError, match="init_sigma"):
        UncertaintyWeighting(init_sigma=0.0)


def test_fit_with_xla_trains_scores_and_sigmas():
    rng = np.random.default_rng(0)
    b, n, f = 64, 20, 6
    x = rng.normal(size=(b, n, f)).astype(np.float32)
    w_true = rng.normal(size=(f,))
    labels = np.argsort(np.argsort(x @ w_true, axis=1), axis=1).astype(np.float32)  # 0..19
    inputs = keras.Input((n, f))
    s1 = keras.layers.Reshape((1, n))(keras.layers.Dense(1, use_bias=False)(inputs))
    s2 = keras.layers.Reshape((1, n))(keras.layers.Dense(1, use_bias=False)(inputs))
    model = keras.Model(inputs, keras.layers.Concatenate(axis=1)([s1, s2]))
    loss = losses.LcronLoss(gt_num=5, stage_k=5, tau=1.0)
    model.lcron_weighting = loss.weighting  # track sigma so the one optimizer trains it
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss=loss, jit_compile=True)
    history = model.fit(x, labels, batch_size=32, epochs=8, verbose=0)
    assert history.history["loss"][-1] < 0.7 * history.history["loss"][0]
    assert any("log_sigma" in v.name for v in model.trainable_variables)
    assert np.max(np.abs(loss.weighting.log_sigma.numpy())) > 1e-3


def test_import_fails_clearly_when_keras3_was_bound_first():
    code = (
        "import os; os.environ.pop('TF_USE_LEGACY_KERAS', None)\n"
        "import tensorflow as tf\n"
        "tf.keras.layers.Dense  # binds tf.keras to Keras 3\n"
        "import lcron_tf.losses\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "TF_USE_LEGACY_KERAS"}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr
    assert "TF_USE_LEGACY_KERAS=1" in proc.stderr
