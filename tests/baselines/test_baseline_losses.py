"""The seven baselines (lcron_method.md §5): values, gradients, masking, training, config."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf
from lcron_examples import reference_example

import lcron_tf
from lcron_tf._keras import keras
from lcron_tf.losses import baselines as bl
from lcron_tf.losses import registry
from lcron_tf.losses.lcron import StageTopKLoss
from lcron_tf.ops import baselines as bops
from lcron_tf.ops import labels as labels_ops
from lcron_tf.ops import sorting

N = 8
GT = 2
QUOTAS = {2: [6, 4], 3: [7, 5, 3]}
LABELS = [9.0, 8.0, 3.0, 3.0, 2.0, 2.0, 1.0, 1.0]

BASELINES = ["bce", "icc", "rankflow", "fs_ranknet", "fs_lambdaloss", "arf", "arf_v2"]


def make_loss(name: str, num_stages: int, **extra) -> lcron_tf.losses.CascadeLoss:
    kwargs: dict = {"gt_num": GT}
    if name in ("icc", "rankflow", "fs_lambdaloss", "arf", "arf_v2"):
        kwargs["quotas"] = QUOTAS[num_stages]
    if name in ("arf", "arf_v2"):
        kwargs["tau"] = 1.0  # a temperature suited to unit-scale toy scores
    if name == "icc":
        kwargs["sigma"] = 0.5
    kwargs.update(extra)
    return registry.get(name, **kwargs)


def toy_batch(num_stages: int, seed: int = 0, scale: float = 1.0, dtype=np.float32):
    """3 requests of N = 8: full, 2 padded slots (scattered), and all padded."""
    rng = np.random.default_rng(seed)
    logits = [scale * rng.normal(size=(3, N)).astype(dtype) for _ in range(num_stages)]
    labels = np.array([LABELS, rng.permutation(LABELS), LABELS], dtype)
    mask = np.ones((3, N), dtype)
    mask[1, [1, 5]] = 0
    mask[2, :] = 0
    return logits, labels, mask


def per_request(loss, logits, labels, mask):
    stages = [tf.constant(x) for x in logits]
    return loss.per_request(stages, tf.constant(labels), tf.constant(mask))


def grads(loss, logits, labels, mask):
    xs = [tf.Variable(x) for x in logits]
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(loss.per_request(xs, tf.constant(labels), tf.constant(mask)))
    return value, tape.gradient(value, xs)


# --------------------------------------------------------------------------------------
# Generic properties of every baseline
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_stages", [2, 3])
@pytest.mark.parametrize("name", BASELINES)
@pytest.mark.parametrize("scale", [1.0, 1e3])
def test_finite_loss_and_gradients(name, num_stages, scale):
    logits, labels, mask = toy_batch(num_stages, scale=scale)
    loss = make_loss(name, num_stages)
    value, gs = grads(loss, logits, labels, mask)
    per = per_request(loss, logits, labels, mask).numpy()
    assert per.shape == (3,)
    assert np.all(np.isfinite(per))
    assert np.isclose(per[2], 0.0)  # no valid candidate (ARF adds ln(sigma) = 0 at sigma = 1)
    for g in gs:
        assert g is not None
        assert np.all(np.isfinite(g.numpy()))
        np.testing.assert_array_equal(g.numpy()[2], 0.0)  # all-padded request


@pytest.mark.parametrize("num_stages", [2, 3])
@pytest.mark.parametrize("name", BASELINES)
def test_masked_candidates_do_not_matter(name, num_stages):
    logits, labels, mask = toy_batch(num_stages)
    loss = make_loss(name, num_stages)
    base = per_request(loss, logits, labels, mask).numpy()
    # Change the scores and labels of the padded slots: nothing changes.
    logits2 = [x.copy() for x in logits]
    labels2 = labels.copy()
    for x in logits2:
        x[1, [1, 5]] = [50.0, -30.0]
    labels2[1, [1, 5]] = [100.0, -7.0]
    np.testing.assert_allclose(per_request(loss, logits2, labels2, mask).numpy(), base, rtol=1e-5)
    _, gs = grads(loss, logits2, labels2, mask)
    for g in gs:
        np.testing.assert_array_equal(g.numpy()[1, [1, 5]], 0.0)
    # The padded request equals the same request without its padded slots (N = 6).
    keep = np.flatnonzero(mask[1])
    small_loss = loss
    if hasattr(loss, "quotas"):
        if name == "icc" and max(QUOTAS[num_stages]) > keep.size:
            return  # ICC: k > n keeps all (I = 1), k = n cuts at the last item (I = 0.5)
        small_loss = make_loss(name, num_stages, quotas=[min(q, 6) for q in QUOTAS[num_stages]])
    small = per_request(
        small_loss,
        [x[1:2, keep] for x in logits],
        labels[1:2, keep],
        np.ones((1, keep.size), np.float32),
    ).numpy()
    np.testing.assert_allclose(small[0], base[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("num_stages", [2, 3])
@pytest.mark.parametrize("name", BASELINES)
def test_gradient_descent_reduces_loss(name, num_stages):
    logits, labels, mask = toy_batch(num_stages, seed=3)
    loss = make_loss(name, num_stages)
    xs = [tf.Variable(x) for x in logits]
    lab, m = tf.constant(labels), tf.constant(mask)

    def value():
        return tf.reduce_mean(loss.per_request(xs, lab, m))

    first = float(value())
    variables = xs + list(getattr(loss, "weighting", keras.layers.Layer()).trainable_variables)
    opt = keras.optimizers.SGD(learning_rate=0.3)
    for _ in range(25):
        with tf.GradientTape() as tape:
            v = value()
        opt.apply_gradients(zip(tape.gradient(v, variables), variables))
    assert float(value()) < first - 1e-3


@pytest.mark.parametrize("name", BASELINES)
def test_config_and_keras_serialization_round_trip(name):
    loss = make_loss(name, 2)
    logits, labels, mask = toy_batch(2)
    y_pred = tf.stack([tf.constant(x) for x in logits], axis=1)
    y_true = {"labels": tf.constant(labels), "mask": tf.constant(mask)}
    expected = loss(y_true, y_pred).numpy()
    clone = type(loss).from_config(loss.get_config())
    assert clone.get_config() == loss.get_config()
    np.testing.assert_allclose(clone(y_true, y_pred).numpy(), expected, rtol=1e-6)
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(restored) is type(loss)
    assert restored.get_config() == loss.get_config()
    np.testing.assert_allclose(restored(y_true, y_pred).numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("name", BASELINES)
def test_keras_call_with_negative_label_padding_and_xla(name):
    loss = make_loss(name, 2)
    logits, labels, mask = toy_batch(2)
    y_true = np.where(mask > 0, labels, -1.0).astype(np.float32)
    y_pred = tf.stack([tf.constant(x) for x in logits], axis=1)
    eager = loss(tf.constant(y_true), y_pred)
    compiled = tf.function(lambda t, p: loss(t, p), jit_compile=True)(tf.constant(y_true), y_pred)
    np.testing.assert_allclose(compiled.numpy(), eager.numpy(), rtol=1e-4, atol=1e-6)


def test_float64_inputs_keep_float64():
    logits, labels, mask = toy_batch(2, dtype=np.float64)
    for name in BASELINES:
        out = per_request(make_loss(name, 2), logits, labels, mask)
        assert out.dtype == tf.float64, name


# --------------------------------------------------------------------------------------
# Hand-computed values
# --------------------------------------------------------------------------------------


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_bce_hand_computed():
    labels = tf.constant([[3.0, 2.0, 1.0]])
    mask = tf.ones((1, 3))
    stages = [tf.zeros((1, 3)), tf.constant([[1.0, 0.0, -1.0]])]
    out = bl.BceLoss(gt_num=1).per_request(stages, labels, mask).numpy()[0]
    expected = math.log(2) + (2 * softplus(-1.0) + math.log(2)) / 3
    assert out == pytest.approx(expected, rel=1e-6)
    # Official sample selection: the last stage trains on the 2 best tiers only.
    out = bl.BceLoss(gt_num=1, train_tiers=[None, 2]).per_request(stages, labels, mask).numpy()[0]
    assert out == pytest.approx(math.log(2) + (softplus(-1.0) + math.log(2)) / 2, rel=1e-6)
    # normalize="list" divides by the list size even with padding.
    padded = tf.constant([[1.0, 1.0, 0.0]])
    out = bl.BceLoss(gt_num=1, normalize="list").per_request(stages, labels, padded).numpy()[0]
    assert out == pytest.approx(2 * math.log(2) / 3 + (softplus(-1.0) + math.log(2)) / 3, rel=1e-6)


def test_fs_ranknet_hand_computed():
    labels = tf.constant([[3.0, 2.0, 1.0]])
    mask = tf.ones((1, 3))
    s = [tf.constant([[1.0, 0.0, -1.0]])]
    out = bl.FsRankNetLoss(gt_num=1).per_request(s, labels, mask).numpy()[0]
    assert out == pytest.approx((softplus(-1) + softplus(-2)) / 2 + softplus(-1), rel=1e-6)
    # gt_num = 2: the ground truth is one tier; no pair inside it.
    out = bl.FsRankNetLoss(gt_num=2).per_request(s, labels, mask).numpy()[0]
    assert out == pytest.approx((softplus(-2) + softplus(-1)) / 2, rel=1e-6)
    out = bl.FsRankNetLoss(gt_num=2, groups="labels").per_request(s, labels, mask).numpy()[0]
    assert out == pytest.approx((softplus(-1) + softplus(-2)) / 2 + softplus(-1), rel=1e-6)


def test_fs_ranknet_equals_official_groups_on_recflow_labels():
    """On RecFlow-shaped labels (segments rank_pos/rank_neg/coarse/prerank) tiers = groups."""
    stages, labels, mask = reference_example(2)
    row = 0  # the unpadded request
    loss = bl.FsRankNetLoss(gt_num=10)
    ours = loss.per_request([tf.constant(x[row : row + 1]) for x in stages],
                            tf.constant(labels[row : row + 1]), tf.constant(mask[row : row + 1]))
    expected = 0.0
    for x in stages:
        seg = [x[row, 10 * g : 10 * g + 10].astype(np.float64) for g in range(4)]
        for g in range(3):
            lower = np.concatenate(seg[g + 1 :])
            diff = lower[None, :] - seg[g][:, None]
            expected += np.mean(np.logaddexp(0.0, diff))
    assert ours.numpy()[0] == pytest.approx(expected, rel=1e-5)


def test_icc_hand_computed():
    labels = tf.constant([[3.0, 2.0, 1.0]], tf.float64)
    mask = tf.ones((1, 3), tf.float64)
    stages = [
        tf.constant([[3.0, 1.0, 2.0]], tf.float64), tf.constant([[0.5, -1.0, 1.0]], tf.float64)
    ]
    # kappa_1 = 2 (2nd largest) -> I_1 = [1, 0, .5]; kappa_2 = 1 -> I_2 = [0, 0, .5];
    # fused = (1 - I_1) s_1 + I_1 I_2 s_2 = [0, 1, 1.25].
    out = bl.IccLoss(quotas=[2, 1]).per_request(stages, labels, mask).numpy()[0]
    assert out == pytest.approx((softplus(1.0) + softplus(1.25) + softplus(0.25)) / 9, rel=1e-9)
    # The official k: the last stage reuses the first quota, kappa_2 = 0.5 -> I_2 = [.5, 0, 1];
    # fused = [0.25, 1, 1.5].
    official = bl.IccLoss(quotas=[2, 1], kappa="official")
    out = official.per_request(stages, labels, mask).numpy()[0]
    assert out == pytest.approx((softplus(0.75) + softplus(1.25) + softplus(0.5)) / 9, rel=1e-9)
    # index_order pairs: a tie (i < j) gets target 0, i.e. pushes i below j.
    tied = tf.constant([[2.0, 2.0, 1.0]], tf.float64)
    out = bl.IccLoss(quotas=[2, 1], pairs="index_order").per_request(stages, tied, mask).numpy()[0]
    assert out == pytest.approx((softplus(-1.0) + softplus(1.25) + softplus(0.25)) / 9, rel=1e-9)
    out = bl.IccLoss(quotas=[2, 1]).per_request(stages, tied, mask).numpy()[0]
    assert out == pytest.approx((softplus(1.25) + softplus(0.25)) / 9, rel=1e-9)


def test_arf_v2_relax_equals_lcron_single_at_m_equal_gt_num():
    stages, labels, mask = reference_example(2)
    arf = bl.ArfV2Loss(quotas=[10, 10], gt_num=10, tau=50.0)
    terms = arf.terms([tf.constant(x) for x in stages], tf.constant(labels), tf.constant(mask))
    for s, x in enumerate(stages):
        single = StageTopKLoss(gt_num=10, stage_k=10, tau=50.0, mode="masked").per_request(
            [tf.constant(x)], tf.constant(labels), tf.constant(mask)
        )
        np.testing.assert_allclose(terms.parts[f"relax/{s}"].numpy(), single.numpy(), rtol=1e-5)


def test_arf_total_is_relax_plus_weighted_global():
    stages, labels, mask = reference_example(2)
    arf = bl.ArfLoss()
    t = arf.terms([tf.constant(x) for x in stages], tf.constant(labels), tf.constant(mask))
    relax = [t.parts[f"relax/{s}"] for s in range(2)]
    glob = [t.parts[f"global/{s}"] for s in range(2)]
    expected = tf.add_n(relax) + 0.5 * tf.add_n(glob)  # sigma = 1
    np.testing.assert_allclose(t.per_request.numpy(), expected.numpy(), rtol=1e-6)
    np.testing.assert_allclose(t.parts["sigma/1"].numpy(), [1.0, 1.0])
    assert len(arf.weighting.trainable_variables) == 1
    assert not bl.ArfLoss(learn_weights=False).weighting.trainable


def test_lambda_weights_hand_computed():
    # 3 items, scores rank them [2, 1, 3]; labels [2, 1, 0]; topn = 3, mu = 1 (v only).
    scores = tf.constant([[1.0, 2.0, 0.0]], tf.float64)
    labels = tf.constant([[2.0, 1.0, 0.0]], tf.float64)
    w = bops.lambda_pair_weights(scores, labels, tf.ones((1, 3), tf.float64), 3, 1.0).numpy()[0]
    idcg = 2 / math.log(2) + 1 / math.log(3)
    g = np.array([2, 1, 0]) / idcg
    d = np.array([1 / math.log(3), 1 / math.log(2), 1 / math.log(4)])
    expected = np.abs(g[:, None] - g[None, :]) * np.abs(d[:, None] - d[None, :])
    np.testing.assert_allclose(w, expected, rtol=1e-12)


# --------------------------------------------------------------------------------------
# Ops: float64 gradient checks and small properties
# --------------------------------------------------------------------------------------


def _check_gradient(f, xs):
    theo, num = tf.test.compute_gradient(f, xs)
    for t, n in zip(theo, num):
        np.testing.assert_allclose(t, n, rtol=1e-5, atol=1e-6)


def test_ops_gradients_float64():
    rng = np.random.default_rng(7)
    s = tf.constant(rng.normal(size=(2, 5)), tf.float64)
    s2 = tf.constant(rng.normal(size=(2, 5)), tf.float64)
    mask = tf.constant([[1, 1, 1, 1, 1], [1, 0, 1, 1, 0]], tf.float64)
    labels = tf.constant([[4, 3, 2, 2, 1], [1, 5, 3, 0, 2]], tf.float64)
    targets = bops.greater_pairs(labels)
    weights = bops.pair_mask(mask) * (1.0 + targets)
    _check_gradient(lambda x: bops.pairwise_logistic(x, targets, weights), [s])
    y = bops.ground_truth_mass(labels, mask, 2)
    _check_gradient(lambda x: bops.masked_sigmoid_bce(x, y, mask, tf.reduce_sum(mask, 1)), [s])
    _check_gradient(lambda x: bops.kth_largest(x, 2, mask), [s])
    _check_gradient(lambda a, b: bops.icc_fused_score([a, b], [4, 2], mask, sigma=0.7), [s, s2])
    lab = labels_ops.label_permutation_matrix(labels, mask)
    _check_gradient(
        lambda x: bops.permutation_cross_entropy(sorting.neural_sort(x, 0.8, mask), lab), [s]
    )
    _check_gradient(
        lambda x: bops.relaxed_topk_mean_nll(sorting.neural_sort(x, 0.8, mask), y, 3, mask), [s]
    )


def test_topk_mask_ranks_and_tiers():
    scores = tf.constant([[0.3, 2.0, -1.0, 5.0, 1.0]])
    mask = tf.constant([[1.0, 1.0, 1.0, 0.0, 1.0]])
    np.testing.assert_array_equal(bops.hard_ranks(scores, mask).numpy(), [[3, 1, 4, 5, 2]])
    np.testing.assert_array_equal(bops.topk_mask(scores, 2, mask).numpy(), [[0, 1, 0, 0, 1]])
    labels = tf.constant([[29.0, 20.0, 7.0, 7.0, 5.0]])
    tiers = bops.tier_labels(labels, tf.ones_like(labels), 2)
    np.testing.assert_array_equal(tiers.numpy(), [[30, 30, 7, 7, 5]])
    idx = bops.tier_index(tiers, tf.ones_like(labels))
    np.testing.assert_array_equal(idx.numpy(), [[0, 0, 1, 1, 2]])


def test_tier_index_is_the_exact_dense_rank_among_valid_items():
    # Oracle: the number of distinct valid label values above the item's (plain numpy). Random
    # ties and padding make float sums of 1/G fall just below an integer (e.g. 1.9999999), which
    # a ``tier < t`` test would misread.
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 6, size=(300, 12)).astype(np.float32)
    mask = (rng.random((300, 12)) > 0.3).astype(np.float32)
    idx = bops.tier_index(tf.constant(labels), tf.constant(mask)).numpy()
    for r in range(len(labels)):
        values = np.unique(labels[r][mask[r] > 0])
        for i in np.flatnonzero(mask[r]):
            assert idx[r, i] == np.sum(values > labels[r, i]), (r, i, idx[r, i])


# --------------------------------------------------------------------------------------
# Validation and the registry
# --------------------------------------------------------------------------------------


def test_registry_and_validation_errors():
    assert registry.names() == BASELINES + ["lcron"]
    assert isinstance(registry.get("FS-LambdaLoss"), bl.FsLambdaLoss)
    assert isinstance(registry.get("lcron"), lcron_tf.losses.LcronLoss)
    with pytest.raises(ValueError, match="Unknown loss"):
        registry.get("nope")
    logits, labels, mask = toy_batch(2)
    with pytest.raises(ValueError, match="at least 2 stage"):
        per_request(make_loss("icc", 2), logits[:1], labels, mask)
    with pytest.raises(ValueError, match="one entry per stage"):
        per_request(make_loss("rankflow", 3), logits, labels, mask)
    with pytest.raises(ValueError, match="quotas"):
        per_request(bl.ArfLoss(gt_num=GT), logits + logits, labels, mask)  # 4 stages, no default
    with pytest.raises(ValueError, match="list_size"):
        per_request(bl.IccLoss(), logits, labels, mask)  # RecFlow quotas 30 > N = 8
    with pytest.raises(ValueError, match="kappa"):
        bl.IccLoss(kappa="code")
    with pytest.raises(ValueError, match="smooth_fraction"):
        bl.FsLambdaLoss(smooth_fraction=2.0)
    with pytest.raises(ValueError, match="quotas"):
        bl.RankFlowLoss(quotas=30)
    with pytest.raises(ValueError, match="train_tiers"):
        bl.BceLoss(train_tiers=[None, 0])
    with pytest.raises(ValueError, match="tau"):
        bl.ArfV2Loss(tau=0.0)


# --------------------------------------------------------------------------------------
# Equality with the official formulas (lcron_method.md §5) on an unpadded request
# --------------------------------------------------------------------------------------


def _np_bce(x, t):
    return np.logaddexp(0.0, x) - t * x


def _np_neural_sort(s, tau):
    n = s.size
    a = np.abs(s[:, None] - s[None, :]).sum(1)
    r = np.arange(1, n + 1)[:, None]
    logits = ((n + 1 - 2 * r) * s[None, :] - a[None, :]) / tau
    logits -= logits.max(1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(1, keepdims=True)


def _unpadded(num_stages):
    stages, labels, _ = reference_example(num_stages)
    xs = [x[0].astype(np.float64) for x in stages]
    return xs, labels[0].astype(np.float64)


def _ours(loss, xs, lab):
    return loss.per_request([tf.constant(x[None]) for x in xs], tf.constant(lab[None]),
                            tf.ones((1, lab.size), tf.float64)).numpy()[0]


@pytest.mark.parametrize("num_stages", [2, 3])
def test_rankflow_equals_official_formula(num_stages):
    xs, lab = _unpadded(num_stages)
    y = (np.arange(lab.size) < 10).astype(np.float64)
    expected = _np_bce(xs[0], y).mean()
    quotas = [30, 20] if num_stages == 2 else [40, 30, 20]
    prev = np.argsort(-xs[0], kind="stable")[: quotas[0]]
    for t in range(1, num_stages):
        cur, before = xs[t][prev], xs[t - 1][prev]
        expected += _np_bce(cur, y[prev]).mean() + np.mean((cur - before) ** 2)
        order = np.argsort(-cur, kind="stable")
        if num_stages == 3:  # the official 3-stage adds the ranking term with weight 1
            keep, drop = order[: quotas[t]], order[quotas[t] :]
            margin = before[keep].mean() - before[drop].mean()
            expected += np.logaddexp(0.0, -margin)
        prev = prev[order[: quotas[t]]]
    assert _ours(bl.RankFlowLoss(gt_num=10), xs, lab) == pytest.approx(expected, rel=1e-9)


def test_fs_lambdaloss_equals_official_formula():
    xs, lab = _unpadded(2)
    n, topn, mu = lab.size, 30, 0.8
    ideal = np.sort(lab)[::-1] / np.log(np.arange(1, n + 1) + 1.0)
    g = lab / ideal.sum()
    expected = 0.0
    for x in xs:
        r = np.argsort(np.argsort(-x, kind="stable"), kind="stable") + 1.0
        d = np.abs(r[:, None] - r[None, :])
        ok = (d > 0) & ((r[:, None] <= topn) | (r[None, :] <= topn))
        dsafe = np.maximum(d, 1.0)
        u = np.where(ok, np.abs(1 / np.log(dsafe + 1) - 1 / np.log(dsafe + 2)), 0.0)
        disc = np.where(r <= topn, 1 / np.log(r + 1), 0.0)
        v = np.abs(disc[:, None] - disc[None, :])
        w = np.abs(g[:, None] - g[None, :]) * ((1 - mu) * u + mu * v)
        t = (lab[:, None] > lab[None, :]).astype(np.float64)
        expected += np.sum(w * _np_bce(x[:, None] - x[None, :], t))
    loss = bl.FsLambdaLoss(quotas=[30, 20], smooth_fraction=0.8)
    assert _ours(loss, xs, lab) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("version", ["arf", "arf_v2"])
def test_arf_equals_official_formula(version):
    xs, lab = _unpadded(2)
    n, tau, eps = lab.size, 200.0, 1e-6
    lab_perm = _np_neural_sort(lab, 1e-4)
    y = lab_perm[:10].sum(0)
    z = lab_perm[10:].sum(0)
    expected = 0.0
    for x, m in zip(xs, [30, 20]):
        p = _np_neural_sort(x, tau)
        glob = np.sum(-lab_perm * np.log(p + eps)) / n**2
        if version == "arf":
            relax = np.mean(-y * np.log(p[:m].mean(0) + eps))
        else:
            c = p.sum(0) + eps
            up, down = p[:m].sum(0) / c, p[m:].sum(0) / c
            relax = np.mean(-y * np.log(up + eps) - z * np.log(down + eps))
        expected += 0.5 * glob + relax
    loss = registry.get(version)
    assert _ours(loss, xs, lab) == pytest.approx(expected, rel=1e-6)


def test_icc_official_options_equal_official_formula():
    xs, lab = _unpadded(3)
    n, sig = lab.size, 1e-3
    lab = lab.copy()
    fused, gate = np.zeros(n), np.ones(n)
    for s, (x, k, c) in enumerate(zip(xs, [40, 30, 30], [1.0, 2.0, 4.0])):
        ind = 0.5 * (1.0 + np.tanh((x - np.sort(x)[::-1][k - 1]) / (2 * sig)))
        if s < 2:
            fused += c * gate * (1 - ind) * x
            gate = gate * ind
        else:
            fused += c * gate * ind * x
    t = (lab[:, None] > lab[None, :]).astype(np.float64)
    expected = np.sum(np.triu(_np_bce(fused[:, None] - fused[None, :], t), 1)) / n**2
    loss = bl.IccLoss(kappa="official", pairs="index_order")
    assert _ours(loss, xs, lab) == pytest.approx(expected, rel=1e-9)
