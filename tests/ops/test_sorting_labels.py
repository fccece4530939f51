"""Relaxed sorting operators, top-k membership and the exact label matrix."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from lcron_tf import ops
from lcron_tf.ops import labels as labels_mod


def np_neural_sort(s, tau):
    n = s.shape[-1]
    b = np.abs(s[:, :, None] - s[:, None, :]).sum(-1)
    r = np.arange(1, n + 1)
    z = ((n + 1 - 2 * r)[None, :, None] * s[:, None, :] - b[:, None, :]) / tau
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def np_soft_sort(s, tau):
    srt = -np.sort(-s, axis=-1)
    z = -np.abs(srt[:, :, None] - s[:, None, :]) / tau
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize(
    "op,oracle", [(ops.neural_sort, np_neural_sort), (ops.soft_sort, np_soft_sort)]
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_operators_match_their_formula(op, oracle, dtype):
    s = np.random.default_rng(0).normal(size=(3, 9)).astype(dtype)
    p = op(tf.constant(s), 0.7)
    assert p.dtype == tf.as_dtype(dtype)
    np.testing.assert_allclose(p.numpy(), oracle(s.astype(np.float64), 0.7), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(p.numpy().sum(-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("op", [ops.neural_sort, ops.soft_sort])
def test_mask_equals_operator_on_valid_items_alone(op):
    rng = np.random.default_rng(1)
    s = rng.normal(size=(1, 12)).astype(np.float64)
    keep = np.array([0, 2, 3, 7, 8, 11])
    mask = np.zeros((1, 12))
    mask[0, keep] = 1
    full = op(tf.constant(s), 0.5, mask=tf.constant(mask)).numpy()
    alone = op(tf.constant(s[:, keep]), 0.5).numpy()
    np.testing.assert_allclose(full[:, : len(keep)][:, :, keep], alone, rtol=1e-10)
    assert np.all(full[:, len(keep) :, :] == 0)
    assert np.all(np.delete(full, keep, axis=2) == 0)


def test_all_padded_is_finite():
    s = tf.constant([[1.0, 2.0, 3.0]])
    for op in (ops.neural_sort, ops.soft_sort):
        p = op(s, 1.0, mask=tf.zeros_like(s))
        assert np.all(p.numpy() == 0)


@pytest.mark.parametrize("k", [1, 3, 7])
def test_topk_membership_first_rows_only_equals_dense(k):
    s = tf.constant(np.random.default_rng(2).normal(size=(4, 7)), tf.float64)
    mask = tf.constant(np.random.default_rng(3).integers(0, 2, size=(4, 7)), tf.float64)
    for m in (None, mask):
        dense = ops.relaxed_topk_membership(ops.neural_sort(s, 0.3, m), k)
        lean = ops.neural_sort_topk_membership(s, 0.3, k, m)
        np.testing.assert_allclose(lean.numpy(), dense.numpy(), rtol=1e-12, atol=1e-15)


def test_label_matrix_equals_official_neuralsort_trick():
    # The official code builds the label matrix as NeuralSort(labels, tau=1e-4) in float32.
    rng = np.random.default_rng(4)
    labels = np.concatenate(
        [
            rng.permutation(np.arange(10, 30))[None, :10].repeat(3, 0),
            rng.integers(5, 8, size=(3, 30)),
        ],
        axis=1,
    ).astype(np.float32)
    official = ops.neural_sort(tf.constant(labels), 1e-4).numpy()
    exact = ops.label_permutation_matrix(labels).numpy()
    # Equal to float32 rounding: on some CPUs the vectorised exp/softmax of the official
    # float32 computation rounds a one-hot 1.0 to 0.99999994 (1 ulp); zeros stay exactly 0.
    np.testing.assert_allclose(exact, official, rtol=0, atol=2e-7)
    np.testing.assert_array_equal(exact == 0, official == 0)
    np.testing.assert_array_equal(
        ops.label_permutation_matrix(labels, binarize=True).numpy(),
        (official > 0.001).astype(np.float32),
    )


def test_label_matrix_tie_groups():
    lab = tf.constant([[5.0, 7.0, 5.0, 9.0, 5.0]])
    p = ops.label_permutation_matrix(lab).numpy()[0]
    np.testing.assert_array_equal(p[0], [0, 0, 0, 1, 0])
    np.testing.assert_array_equal(p[1], [0, 1, 0, 0, 0])
    for r in (2, 3, 4):
        np.testing.assert_allclose(p[r], [1 / 3, 0, 1 / 3, 0, 1 / 3])
    start, size = ops.tie_groups(lab)
    np.testing.assert_array_equal(start.numpy(), [[2, 1, 2, 0, 2]])
    np.testing.assert_array_equal(size.numpy(), [[3, 1, 3, 1, 3]])


@pytest.mark.parametrize("binarize", [False, True])
@pytest.mark.parametrize("use_mask", [False, True])
def test_label_row_mass_equals_matrix_row_sums(binarize, use_mask):
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 4, size=(6, 11)).astype(np.float32)
    mask = rng.integers(0, 2, size=(6, 11)).astype(np.float32) if use_mask else None
    mat = ops.label_permutation_matrix(labels, mask, binarize).numpy()
    ends = rng.integers(0, 12, size=6)
    for start in (0, 2, 5):
        mass = ops.label_row_mass(labels, start, ends.astype(np.float32), mask, binarize).numpy()
        expect = np.stack([mat[b, start : max(start, ends[b])].sum(0) for b in range(6)])
        np.testing.assert_allclose(mass, expect, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("op", [ops.neural_sort, ops.soft_sort])
def test_operator_gradients_float64(op):
    # Distinct scores (tf.abs and sort have kinks at ties).
    s = tf.constant(np.random.default_rng(6).permutation(8)[None].astype(np.float64) * 0.37 + 0.1)
    mask = tf.constant([[1, 1, 0, 1, 1, 1, 0, 1]], tf.float64)
    w = tf.constant(np.random.default_rng(7).normal(size=(1, 8, 8)))
    for m in (None, mask):
        theo, num = tf.test.compute_gradient(lambda x, m=m: tf.reduce_sum(op(x, 0.9, m) * w), [s])
        np.testing.assert_allclose(theo[0], num[0], rtol=1e-5, atol=1e-7)


def test_normalized_up_down_gradient_float64():
    # The normaliser is detached, so finite differences must hold it fixed: compare with a
    # float64 finite-difference gradient of the same formula with the normaliser frozen.
    s = tf.constant(np.random.default_rng(8).normal(size=(2, 9)))
    w = tf.constant(np.random.default_rng(9).normal(size=(2, 9)))
    mask = tf.constant(np.r_[np.ones(9), np.r_[np.ones(6), np.zeros(3)]].reshape(2, 9))
    rows = tf.constant((np.arange(9)[None, :] < np.array([[9], [6]])).astype(np.float64))
    frozen = tf.reduce_sum(ops.neural_sort(s, 0.8) * rows[:, :, None] * mask[:, None, :], 1) + 1e-6

    def ours(x):
        up, down = ops.normalized_up_down(
            x, 3, tau=0.8, sort="neural", row_limit=tf.reduce_sum(mask, 1), col_mask=mask
        )
        return tf.reduce_sum(up * w) + tf.reduce_sum(down * w * w)

    def formula(x):
        p = ops.neural_sort(x, 0.8) * rows[:, :, None] * mask[:, None, :]
        up = tf.reduce_sum(p[:, :3], 1) / frozen
        down = tf.reduce_sum(p[:, 3:], 1) / frozen
        return tf.reduce_sum(up * w) + tf.reduce_sum(down * w * w)

    theo, _ = tf.test.compute_gradient(ours, [s], delta=1e-6)
    _, num = tf.test.compute_gradient(formula, [s], delta=1e-6)
    np.testing.assert_allclose(theo[0], num[0], rtol=1e-5, atol=1e-7)
    assert np.max(np.abs(theo[0])) > 1e-3


@pytest.mark.parametrize("sort", ["neural", "soft"])
@pytest.mark.parametrize("num_stages", [2, 3])
def test_loss_gradient_float64_against_torch_autograd(sort, num_stages):
    torch_oracle = pytest.importorskip("torch_oracle", reason="needs torch (pip install .[parity])")
    import torch

    rng = np.random.default_rng(10 + num_stages)
    logits = [rng.normal(size=(3, 16)) for _ in range(num_stages)]
    labels = np.stack([rng.permutation(16) for _ in range(3)]).astype(np.float32)
    labels[:, 8:] = np.minimum(labels[:, 8:], 4)  # ties among the lower labels
    mask = np.ones((3, 16))
    mask[1, 12:] = 0
    mask[2, 3:5] = 0
    ref = torch_oracle.lcron_reference(
        logits,
        labels,
        mask,
        gt_num=4,
        k=4,
        tau=1.5,
        binarize=num_stages == 3,
        sort=sort,
        dtype=torch.float64,
    )
    xs = [tf.constant(x) for x in logits]
    with tf.GradientTape() as tape:
        tape.watch(xs)
        total = ops.lcron_loss_terms(
            xs, labels.astype(np.float64), mask, gt_num=4, stage_k=4, tau=1.5, sort=sort,
            mode="reference",
        )["total"]
    np.testing.assert_allclose(float(total), ref["total"], rtol=1e-12)
    for g, rg in zip(tape.gradient(total, xs), ref["grads"]):
        np.testing.assert_allclose(g.numpy(), rg, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("n", [13, 64, 65, 90])  # pairwise up to N = 64, sorted above
@pytest.mark.parametrize("use_mask", [False, True])
def test_tie_groups_match_brute_force_eager_and_xla(use_mask, n):
    assert (n <= labels_mod.PAIRWISE_MAX_LIST_SIZE) == (n in (13, 64))
    rng = np.random.default_rng(12)
    labels = rng.integers(0, 4, size=(5, n)).astype(np.float32)
    labels[0] = 1.0  # one group spanning the whole list
    mask = (rng.random((5, n)) < 0.7).astype(np.float32) if use_mask else None
    valid = np.ones_like(labels, bool) if mask is None else mask > 0
    expect_start = np.zeros(labels.shape, np.int32)
    expect_size = np.zeros(labels.shape, np.int32)
    for b in range(5):
        for i in range(n):
            if valid[b, i]:
                expect_start[b, i] = np.sum(valid[b] & (labels[b] > labels[b, i]))
                expect_size[b, i] = np.sum(valid[b] & (labels[b] == labels[b, i]))
    xla = tf.function(lambda lab, m: ops.tie_groups(lab, m), jit_compile=True)
    for start, size in (ops.tie_groups(labels, mask), xla(labels, mask)):
        np.testing.assert_array_equal(np.where(valid, start.numpy(), 0), expect_start)
        np.testing.assert_array_equal(np.where(valid, size.numpy(), 0), expect_size)


@pytest.mark.parametrize("use_mask", [False, True])
def test_tie_groups_pairwise_equals_sorted_on_every_item(use_mask):
    # Padded items included: both paths put them in one group after the valid items.
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 5, size=(7, 40)).astype(np.float32)
    mask = (rng.random((7, 40)) < 0.6).astype(np.float32) if use_mask else None
    key, valid = labels_mod._key_and_valid(labels, mask)
    pairwise = labels_mod._tie_groups_pairwise(key, valid)
    for got, want in zip(pairwise, labels_mod._tie_groups_sorted(key, valid)):
        np.testing.assert_array_equal(got.numpy(), want.numpy())
