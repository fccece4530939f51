"""CascadeTopK (hard, inference) and CascadeSelection (relaxed survival) layers."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from lcron_tf._keras import keras
from lcron_tf.layers import CascadeSelection, CascadeTopK
from lcron_tf.ops import cascade, topk


def test_cascade_topk_hand_made_example():
    # 8 candidates; slot 6 is padded (and has the best stage-1 score: must never be picked).
    s1 = [[0.9, 0.1, 0.8, 0.8, 0.3, 0.7, 9.9, 0.2]]
    s2 = [[0.0, 5.0, 1.0, 3.0, 2.0, 3.0, 9.9, 4.0]]
    mask = [[1, 1, 1, 1, 1, 1, 0, 1]]
    # Stage 1 keeps top-5 valid by s1: 0 (.9), 2 (.8), 3 (.8; tie -> lower index first),
    # 5 (.7), 4 (.3). Stage 2 keeps top-3 of those by s2: 3 (3.0), 5 (3.0; tie), 4 (2.0).
    indices, survival = CascadeTopK((5, 3))(tf.constant([s1[0], s2[0]])[None], mask=mask)
    np.testing.assert_array_equal(indices.numpy(), [[3, 5, 4]])
    np.testing.assert_array_equal(survival.numpy(), [[0, 0, 0, 1, 1, 1, 0, 0]])
    assert indices.dtype == tf.int32 and survival.dtype == tf.float32


def test_cascade_topk_fewer_valid_than_quota_and_list_input():
    s1 = tf.constant([[3.0, 2.0, 1.0, 0.0], [1.0, 2.0, 3.0, 4.0]])
    s2 = tf.constant([[0.0, 1.0, 2.0, 3.0], [4.0, 3.0, 2.0, 1.0]])
    mask = tf.constant([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    layer = CascadeTopK([3, 2])
    indices, survival = layer([s1, s2], mask)
    # Row 0 has 2 valid candidates: both survive (ordered by stage-2 score), no padding.
    np.testing.assert_array_equal(indices.numpy(), [[1, 0], [1, 2]])
    np.testing.assert_array_equal(survival.numpy(), [[1, 1, 0, 0], [0, 1, 1, 0]])
    indices, survival = CascadeTopK([3, 2])([s1, s2], tf.constant([[1.0, 0, 0, 0]] * 2))
    np.testing.assert_array_equal(indices.numpy(), [[0, -1], [0, -1]])  # -1 = empty slot
    # No mask: every slot is valid.
    np.testing.assert_array_equal(layer([s1, s2])[0].numpy(), [[2, 1], [1, 2]])


def test_cascade_topk_config_and_errors():
    layer = CascadeTopK((30, 20), name="topk")
    clone = keras.utils.deserialize_keras_object(keras.utils.serialize_keras_object(layer))
    assert clone.get_config() == layer.get_config() and list(clone.quotas) == [30, 20]
    with pytest.raises(ValueError, match="strictly decreasing"):
        CascadeTopK((20, 30))
    with pytest.raises(ValueError, match="quotas"):
        CascadeTopK((5, 3))(tf.zeros([2, 2, 4]))  # quotas[0] > N
    with pytest.raises(ValueError, match="number of `quotas`"):
        CascadeTopK((3, 2, 1))(tf.zeros([2, 2, 4]))


def _case(seed=0, b=3, n=12, num_stages=2):
    rng = np.random.default_rng(seed)
    stages = [rng.normal(size=(b, n)).astype(np.float32) * 3 for _ in range(num_stages)]
    mask = np.ones((b, n), np.float32)
    mask[1, -3:] = 0
    return stages, mask


@pytest.mark.parametrize("mode", ["masked", "reference"])
def test_cascade_selection_is_lcron_survival(mode):
    stages, mask = _case()
    labels = np.tile(np.arange(12, 0, -1, dtype=np.float32), (3, 1))
    layer = CascadeSelection(ks=(6, 4), tau=2.0, mode=mode)
    got = layer(np.stack(stages, 1), mask=mask).numpy()
    terms = cascade.lcron_loss_terms(stages, labels, mask, gt_num=3, stage_k=[6, 4], tau=2.0,
                                     mode=mode)
    expected = (terms["up"][0] * terms["up"][1]).numpy()
    if mode == "masked":
        expected = expected * mask
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert np.all(got >= 0) and np.all(got <= 1 + 1e-6)
    assert np.all(got[1, -3:] == 0)  # padded candidates never survive


def test_cascade_selection_unnormalized_and_soft_and_grad():
    stages, mask = _case(1, num_stages=3)
    raw = CascadeSelection(ks=(8, 6, 4), tau=1.0, normalize=False)(stages, mask=mask)
    expected = np.prod(
        [topk.neural_sort_topk_membership(s, 1.0, k, mask).numpy()
         for s, k in zip(stages, (8, 6, 4))], axis=0,
    )
    np.testing.assert_allclose(raw.numpy(), expected, atol=1e-6)
    x = [tf.Variable(s) for s in stages]
    soft = CascadeSelection(ks=(8, 6, 4), tau=1.0, sort="soft")
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(soft(x, mask=mask))
    grads = tape.gradient(total, x)
    assert all(g is not None and np.all(np.isfinite(g.numpy())) for g in grads)
    assert any(np.abs(g.numpy()).sum() > 0 for g in grads)
    xla = tf.function(lambda s: soft(s, mask=mask), jit_compile=True)(stages)
    np.testing.assert_allclose(xla.numpy(), soft(stages, mask=mask).numpy(), atol=1e-6)


def test_cascade_selection_config_and_errors():
    layer = CascadeSelection((10, 5), tau=20.0, sort="soft", mode="reference", normalize=False)
    clone = keras.utils.deserialize_keras_object(keras.utils.serialize_keras_object(layer))
    assert clone.get_config() == layer.get_config()
    with pytest.raises(ValueError, match="`tau`"):
        CascadeSelection((3, 2), tau=0.0)
    with pytest.raises(ValueError, match="`mode`"):
        CascadeSelection((3, 2), mode="bogus")
    with pytest.raises(ValueError, match=r"`ks\[0\]`"):
        CascadeSelection((13, 2))(tf.zeros([2, 2, 12]))
    with pytest.raises(ValueError, match="`ks`"):
        CascadeSelection((3, 2, 1))(tf.zeros([2, 2, 12]))
