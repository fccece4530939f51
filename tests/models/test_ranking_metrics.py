"""Ranking metrics vs a plain numpy oracle of the official definitions (lcron_method.md §1)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from lcron_tf._keras import keras
from lcron_tf.metrics import NDCG, JointRecall, StageRecall
from lcron_tf.ops import ranking_metrics as rm

# ----------------------------------------------------------------------------- numpy oracle


def np_top(values, valid, q):
    """The first q valid indices by value desc, ties by lower index (the documented rule)."""
    idx = [i for i in range(len(values)) if valid[i]]
    return sorted(idx, key=lambda i: (-values[i], i))[:q]


def np_joint_recall(stages, labels, mask, k, quotas):
    out = []
    for b in range(labels.shape[0]):
        alive = mask[b] > 0
        for s, q in zip(stages, quotas):
            kept = np_top(s[b], alive, q)
            alive = np.zeros_like(alive)
            alive[kept] = True
        gt = set(np_top(labels[b], mask[b] > 0, k))
        out.append(len(gt & set(np.flatnonzero(alive))) / k)
    return np.array(out)


def np_stage_recall(scores, labels, mask, k, m):
    out = []
    for b in range(labels.shape[0]):
        gt = set(np_top(labels[b], mask[b] > 0, k))
        out.append(len(gt & set(np_top(scores[b], mask[b] > 0, m))) / k)
    return np.array(out)


def np_ndcg(y_true, y_score, k):
    """A copy of sklearn's ndcg_score internals (ignore_ties=False), per sample."""
    n = y_true.shape[1]
    discount = 1 / (np.log(np.arange(n) + 2) / np.log(2))
    discount[k:] = 0
    cumsum = np.cumsum(discount)
    out = []
    for t, s in zip(y_true, y_score):
        _, inv, counts = np.unique(-s, return_inverse=True, return_counts=True)
        ranked = np.zeros(len(counts))
        np.add.at(ranked, inv, t)
        ranked /= counts
        groups = np.cumsum(counts) - 1
        sums = np.empty(len(counts))
        sums[0] = cumsum[groups[0]]
        sums[1:] = np.diff(cumsum[groups])
        dcg = (ranked * sums).sum()
        idcg = (np.sort(t)[::-1] * discount).sum()
        out.append(0.0 if idcg == 0 else dcg / idcg)
    return np.array(out)


def random_case(seed, b=24, n=15, num_stages=2):
    rng = np.random.default_rng(seed)
    # Integer-valued scores and labels: plenty of ties, to exercise the tie rule.
    stages = [rng.integers(0, 6, size=(b, n)).astype(np.float32) for _ in range(num_stages)]
    labels = rng.integers(0, 8, size=(b, n)).astype(np.float32)
    mask = np.ones((b, n), np.float32)
    for row in range(b):
        if row % 3 == 1:
            mask[row, n - rng.integers(1, 6) :] = 0
        if row % 5 == 4:  # padding in the middle, too
            mask[row, rng.choice(n, 3, replace=False)] = 0
    mask[0, 5:] = 0  # fewer valid candidates than the first quota
    return stages, labels, mask


# ----------------------------------------------------------------------------- ops vs oracle


@pytest.mark.parametrize("num_stages,quotas", [(2, (10, 7)), (3, (12, 8, 5))])
def test_joint_recall_matches_oracle(num_stages, quotas):
    stages, labels, mask = random_case(num_stages, num_stages=num_stages)
    got = rm.joint_recall(stages, labels, mask, 4, quotas).numpy()
    np.testing.assert_allclose(got, np_joint_recall(stages, labels, mask, 4, quotas), atol=1e-6)


def test_stage_recall_matches_oracle():
    stages, labels, mask = random_case(7)
    for m in (3, 8, 15):
        got = rm.stage_recall(stages[0], labels, mask, 4, m).numpy()
        np.testing.assert_allclose(got, np_stage_recall(stages[0], labels, mask, 4, m), atol=1e-6)


def test_ndcg_matches_sklearn_copy_unmasked_and_masked():
    stages, labels, mask = random_case(11)
    scores = stages[0] + np.random.default_rng(0).normal(size=labels.shape).astype(np.float32)
    scores[:, ::4] = np.round(scores[:, ::4])  # keep some ties
    for k in (1, 5, 15):
        got = rm.ndcg(scores, labels, k).numpy()
        np.testing.assert_allclose(got, np_ndcg(labels, scores, k), atol=1e-5)
        masked = rm.ndcg(scores, labels, k, mask, masked=True).numpy()
        ref = np_ndcg(labels * mask, np.where(mask > 0, scores, -np.inf), k)
        np.testing.assert_allclose(masked, ref, atol=1e-5)


def test_ndcg_sklearn_documented_values():
    labels = np.array([[10, 0, 0, 1, 5]], np.float32)
    value = rm.ndcg([[0.1, 0.2, 0.3, 4, 70]], labels, 5).numpy()[0]
    assert value == pytest.approx(0.6957, abs=1e-4)
    # sklearn docs: ties averaged -> 0.75 at k=1 (ignore_ties=True would give 0.5).
    assert rm.ndcg([[1.0, 0, 0, 0, 1]], labels, 1).numpy()[0] == pytest.approx(0.75, abs=1e-6)
    assert rm.ndcg([[1.0, 0, 0, 0, 1]], np.zeros_like(labels), 3).numpy()[0] == 0.0


def test_tie_rule_is_lower_index_first_and_padding_last():
    scores = tf.constant([[2.0, 5.0, 5.0, 9.0, 5.0, float("nan")]])
    mask = tf.constant([[1.0, 1.0, 1.0, 0.0, 1.0, 1.0]])
    np.testing.assert_array_equal(rm.descending_order(scores, mask).numpy(), [[1, 2, 4, 0, 5, 3]])
    np.testing.assert_array_equal(rm.topk_mask(scores, 2, mask).numpy(), [[0, 1, 1, 0, 0, 0]])
    np.testing.assert_array_equal(rm.topk_mask(scores, 9, mask).numpy(), [[1, 1, 1, 0, 1, 1]])


def test_ops_under_xla_equal_eager():
    stages, labels, mask = random_case(3)

    def fn(s0, s1, y, m):
        return (
            rm.joint_recall([s0, s1], y, m, 4, (10, 7)),
            rm.stage_recall(s1, y, m, 4, 7),
            rm.ndcg(s1, y, 5),
            rm.cascade_topk([s0, s1], (10, 7), m)[0],
        )

    eager = fn(*stages, labels, mask)
    xla = tf.function(fn, jit_compile=True)(*stages, labels, mask)
    for a, b in zip(eager, xla):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)


# ----------------------------------------------------------------------------- Keras metrics


def test_keras_metrics_are_weighted_means_of_the_oracle():
    stages, labels, mask = random_case(5)
    weights = np.random.default_rng(1).uniform(0.5, 2.0, size=labels.shape[0]).astype(np.float32)
    y_true = {"labels": labels, "mask": mask}
    y_pred = np.stack(stages, axis=1)  # [B, S, N]
    cases = [
        (JointRecall(k=4, quotas=(10, 7)), np_joint_recall(stages, labels, mask, 4, (10, 7))),
        (StageRecall(k=4, m=10, stage=0), np_stage_recall(stages[0], labels, mask, 4, 10)),
        (StageRecall(k=4, m=7), np_stage_recall(stages[1], labels, mask, 4, 7)),
        (NDCG(k=5, stage=0), np_ndcg(labels, stages[0], 5)),
    ]
    for metric, per_request in cases:
        half = labels.shape[0] // 2  # two updates: a streaming weighted mean
        metric.update_state({k: v[:half] for k, v in y_true.items()}, y_pred[:half], weights[:half])
        metric.update_state({k: v[half:] for k, v in y_true.items()}, list(np.moveaxis(
            y_pred[half:], 1, 0)), weights[half:, None])
        expected = np.sum(per_request * weights) / np.sum(weights)
        assert metric.result().numpy() == pytest.approx(expected, abs=1e-5), metric.name


def test_metric_label_padding_convention():
    stages, labels, mask = random_case(9)
    y = np.where(mask > 0, labels, -1.0)  # label < 0 = padded, no explicit mask
    m1, m2 = JointRecall(k=4, quotas=(10, 7)), JointRecall(k=4, quotas=(10, 7))
    m1.update_state(y, np.stack(stages, 1))
    m2.update_state({"labels": labels, "mask": mask}, np.stack(stages, 1))
    assert m1.result().numpy() == pytest.approx(m2.result().numpy())


def test_metric_names_and_config_round_trip():
    metrics = [JointRecall(k=10, quotas=(40, 30, 20)), StageRecall(10, 30, stage=0),
               StageRecall(10, 20), NDCG(10, stage=1, masked=True)]
    assert [m.name for m in metrics] == [
        "joint_recall_at_10_at_20", "stage0_recall_at_10_at_30",
        "last_stage_recall_at_10_at_20", "stage1_ndcg_at_10",
    ]
    for m in metrics:
        clone = keras.utils.deserialize_keras_object(keras.utils.serialize_keras_object(m))
        assert type(clone) is type(m) and clone.get_config() == m.get_config()


def test_errors_name_the_argument():
    stages, labels, mask = random_case(0)
    with pytest.raises(ValueError, match="strictly decreasing"):
        JointRecall(k=4, quotas=(7, 10))
    with pytest.raises(ValueError, match="quotas"):
        JointRecall(k=4, quotas=(20, 7)).update_state(labels, np.stack(stages, 1))  # > N=15
    with pytest.raises(ValueError, match="number of `quotas`"):
        JointRecall(k=4, quotas=(10, 7, 5)).update_state(labels, np.stack(stages, 1))
    with pytest.raises(ValueError, match="`k`"):
        JointRecall(k=16, quotas=(10, 7)).update_state(labels, np.stack(stages, 1))
    with pytest.raises(ValueError, match="`m`"):
        StageRecall(k=4, m=16).update_state(labels, np.stack(stages, 1))
    with pytest.raises(ValueError, match="`stage`"):
        NDCG(k=4, stage=2).update_state(labels, np.stack(stages, 1))
    with pytest.raises(ValueError, match="`k`"):
        NDCG(k=0)
