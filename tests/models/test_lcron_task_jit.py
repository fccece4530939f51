"""LcronTask(jit_compile=True) and CascadeMultiTask (LCRON + the TFRS tasks on one scale)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_recommenders as tfrs

from lcron_tf._keras import keras
from lcron_tf.losses import LcronLoss
from lcron_tf.metrics import JointRecall
from lcron_tf.models import CascadeMultiTask, LcronTask, positive_pairs


def _inputs(b=8, n=12, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.tile(np.r_[np.arange(4, 0, -1) + 10.0, np.ones(n - 4)], (b, 1)).astype(np.float32)
    mask = np.ones((b, n), np.float32)
    mask[0, -3:] = 0
    stages = rng.normal(size=(b, 2, n)).astype(np.float32)
    return labels, stages, mask


def _task(jit):
    return LcronTask(loss=LcronLoss(gt_num=4, stage_k=4), stage_names=("r", "k"),
                     metrics=[JointRecall(k=4, quotas=(8, 6))], jit_compile=jit)


def test_jit_task_matches_the_eager_task_in_loss_gradient_and_metrics():
    labels, stages, mask = _inputs()
    results = []
    for jit in (False, True):
        task = _task(jit)
        x = tf.Variable(stages)
        with tf.GradientTape() as tape:
            loss = task(labels, x, mask)
        grad = tape.gradient(loss, [x, task.loss_weighting.log_sigma])
        results.append((loss.numpy(), [g.numpy() for g in grad],
                        {m.name: m.result().numpy() for m in task.metrics}))
        if jit:
            assert task._compiled_call._jit_compile is True
            assert task._compiled_call.experimental_get_tracing_count() == 1
    (l0, g0, m0), (l1, g1, m1) = results
    assert l1 == pytest.approx(l0, rel=1e-5)
    for a, b in zip(g0, g1):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
    assert m0.keys() == m1.keys() and "lcron_e2e" in m0
    for k in m0:
        assert m1[k] == pytest.approx(m0[k], rel=1e-5), k


def test_jit_option_round_trips_in_the_config():
    task = LcronTask.from_config(_task(True).get_config())
    assert task.jit_compile is True


def test_positive_pairs_mask_other_positives_of_the_same_request():
    q = tf.constant(np.arange(6, dtype=np.float32).reshape(3, 2))
    c = tf.constant(np.arange(3 * 5 * 2, dtype=np.float32).reshape(3, 5, 2))
    mask = tf.constant([[1, 1, 1, 1, 1], [1, 0, 1, 1, 1], [1, 1, 1, 1, 1]], tf.float32)
    qq, cc, w, sm = positive_pairs(q, c, mask, slice(0, 2))
    np.testing.assert_array_equal(qq.numpy(), np.repeat(q.numpy(), 2, 0))
    np.testing.assert_array_equal(cc.numpy(), c.numpy()[:, :2].reshape(6, 2))
    np.testing.assert_array_equal(w.numpy(), [1, 1, 1, 0, 1, 1])
    sm = sm.numpy()
    assert sm[0, 0] and not sm[0, 1] and sm[0, 2]  # own positive kept, sibling removed
    assert not sm[:, 3].any()  # a padded positive is nobody's negative


def test_multitask_puts_the_retrieval_sum_on_a_per_pair_scale():
    labels, stages, mask = _inputs()
    rng = np.random.default_rng(1)
    user = tf.constant(rng.normal(size=(8, 4)).astype(np.float32))
    items = tf.constant(rng.normal(size=(8, 12, 4)).astype(np.float32))
    rel = tf.constant(rng.integers(1, 6, size=(8, 12)).astype(np.float32))
    pred = tf.constant(rng.normal(size=(8, 12, 1)).astype(np.float32))
    retrieval, ranking = tfrs.tasks.Retrieval(), tfrs.tasks.Ranking(
        loss=keras.losses.MeanSquaredError())
    lcron = _task(True)
    task = CascadeMultiTask(lcron, retrieval, ranking, positives=slice(0, 4),
                            weights={"lcron": 2.0, "retrieval": 0.5})
    total = task(labels, stages, mask, query_embeddings=user, candidate_embeddings=items,
                 relevance=rel, relevance_predictions=pred, training=True)
    parts = {m.name: m.result().numpy() for m in task.part_metrics.values()}
    # The parts, recomputed from TFRS's own tasks.
    q, c, w, sm = positive_pairs(user, items, mask, slice(0, 4))
    summed = tfrs.tasks.Retrieval()(q, c, sample_weight=w, score_mask=sm).numpy()
    assert parts["multitask_retrieval"] == pytest.approx(summed / 32, rel=1e-5)
    mse = keras.losses.MeanSquaredError()(tf.reshape(rel[:, :4], [-1, 1]),
                                          tf.reshape(pred[:, :4], [-1, 1]),
                                          sample_weight=tf.reshape(mask[:, :4], [-1])).numpy()
    assert parts["multitask_ranking"] == pytest.approx(mse, rel=1e-5)
    want = 2.0 * parts["multitask_lcron"] + 0.5 * summed / 32 + 1.0 * mse
    assert total.numpy() == pytest.approx(want, rel=1e-5)
    assert summed > 10 * parts["multitask_lcron"]  # the raw TFRS sum would dominate


def test_multitask_rejects_unknown_weights_and_mean_retrieval_losses():
    with pytest.raises(ValueError, match="weights"):
        CascadeMultiTask(_task(False), weights={"rating": 1.0})
    mean_loss = tfrs.tasks.Retrieval(loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    with pytest.raises(ValueError, match="reduction SUM"):
        CascadeMultiTask(_task(False), retrieval=mean_loss)
