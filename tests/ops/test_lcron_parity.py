"""Parity of lcron_loss_terms with the official LCRON code (values and gradients)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from lcron_examples import THREE_STAGE, TWO_STAGE, reference_example

from lcron_tf import ops
from lcron_tf.losses import lcron_loss_terms

torch_oracle = pytest.importorskip("torch_oracle", reason="needs torch (pip install .[parity])")


def _grads(stage_logits, labels, mask, **kw):
    kw.setdefault("mode", "reference")  # parity is with the official code (the default is masked)
    xs = [tf.constant(x) for x in stage_logits]
    with tf.GradientTape() as tape:
        tape.watch(xs)
        terms = lcron_loss_terms(xs, labels, mask, **kw)
    return terms, tape.gradient(terms["total"], xs)


@pytest.mark.parametrize("num_stages,expected", [(2, TWO_STAGE), (3, THREE_STAGE)])
def test_reference_example_values(num_stages, expected):
    logits, labels, mask = reference_example(num_stages)
    t = lcron_loss_terms(logits, labels, mask, gt_num=10, stage_k=10, tau=50.0, mode="reference")
    np.testing.assert_allclose(float(t["total"]), expected["total"], atol=1e-5)
    np.testing.assert_allclose(float(t["e2e"]), expected["e2e"], atol=1e-5)
    np.testing.assert_allclose([float(v) for v in t["single"]], expected["single"], atol=1e-5)


def test_reference_example_per_request_parts():
    # lcron_method.md §10: per-sample up = [0.570523, 0.840487], down = [0.029665, 1.416988];
    # up + down is the per-request L_e2e.
    logits, labels, mask = reference_example(2)
    t = lcron_loss_terms(logits, labels, mask, mode="reference")
    np.testing.assert_allclose(
        t["e2e_per_request"].numpy(), [0.570523 + 0.029665, 0.840487 + 1.416988], atol=1e-5
    )


def test_reference_operator_slices():
    logits, _, _ = reference_example(2)
    dssm, din = (tf.constant(x) for x in logits)
    np.testing.assert_allclose(
        ops.neural_sort(din, 50.0)[0, 0, :5],
        [0.0164249, 0.0289041, 0.0416255, 0.049388, 0.0512001],
        rtol=2e-5,
    )
    np.testing.assert_allclose(
        tf.reduce_sum(ops.neural_sort(dssm, 50.0), axis=1)[0, :5],
        [1.02834, 1.08201, 1.12906, 1.13524, 1.10040],
        rtol=2e-5,
    )
    np.testing.assert_allclose(
        ops.soft_sort(din, 50.0)[0, 0, :5],
        [0.0248922, 0.0252549, 0.0255728, 0.0258002, 0.0259038],
        rtol=2e-5,
    )


def test_binarised_label_matrix_changes_two_stage_single():
    # lcron_method.md §9.1: L_single(DIN) is 0.5119 soft, 2.1310 binarised.
    logits, labels, mask = reference_example(2)
    t = lcron_loss_terms(logits, labels, mask, label_matrix="binary", mode="reference")
    np.testing.assert_allclose(float(t["single"][1]), 2.1310, atol=1e-4)


@pytest.mark.parametrize("num_stages", [2, 3])
def test_reference_example_matches_torch_oracle(num_stages):
    logits, labels, mask = reference_example(num_stages)
    ref = torch_oracle.lcron_reference(logits, labels, mask, binarize=num_stages == 3)
    np.testing.assert_allclose(
        ref["total"], (TWO_STAGE if num_stages == 2 else THREE_STAGE)["total"], atol=1e-5
    )
    terms, grads = _grads(logits, labels, mask)
    np.testing.assert_allclose(float(terms["total"]), ref["total"], atol=1e-5)
    for g, rg in zip(grads, ref["grads"]):
        np.testing.assert_allclose(g.numpy(), rg, atol=1e-6, rtol=1e-4)


def _random_case(rng, b, n, num_stages, tie_labels=True, prefix_padding=False):
    logits = [rng.normal(scale=2.0, size=(b, n)).astype(np.float32) for _ in range(num_stages)]
    if tie_labels:  # RecFlow-like: distinct positives then tied negative groups
        labels = np.concatenate(
            [
                rng.permutation(np.arange(10, 10 + n // 4))[None].repeat(b, 0),
                rng.integers(5, 8, size=(b, n - n // 4)),
            ],
            axis=1,
        ).astype(np.float32)
    else:
        labels = np.stack([rng.permutation(n) for _ in range(b)]).astype(np.float32)
    mask = np.ones((b, n), np.float32)
    for r in range(b):
        pad = rng.integers(0, n // 3)
        if pad:
            if prefix_padding:
                mask[r, n - pad :] = 0
            else:
                mask[r, rng.choice(n, pad, replace=False)] = 0
    return logits, labels, mask


@pytest.mark.parametrize("num_stages", [2, 3])
@pytest.mark.parametrize("sort", ["neural", "soft"])
@pytest.mark.parametrize("prefix_padding", [True, False])
def test_random_inputs_match_torch_oracle(num_stages, sort, prefix_padding):
    rng = np.random.default_rng(7 + num_stages)
    logits, labels, mask = _random_case(rng, 4, 24, num_stages, prefix_padding=prefix_padding)
    kw = dict(gt_num=5, stage_k=5, tau=3.0, sort=sort)
    ref = torch_oracle.lcron_reference(
        logits, labels, mask, gt_num=5, k=5, tau=3.0, binarize=num_stages == 3, sort=sort
    )
    terms, grads = _grads(logits, labels, mask, **kw)
    np.testing.assert_allclose(float(terms["total"]), ref["total"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(float(terms["e2e"]), ref["e2e"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        [float(v) for v in terms["single"]], ref["single"], rtol=1e-5, atol=1e-5
    )
    for g, rg in zip(grads, ref["grads"]):
        np.testing.assert_allclose(g.numpy(), rg, atol=2e-6, rtol=1e-4)


def test_down_gradient_differs_from_one_minus_up():
    # The "down" terms must be computed from the rows >= k: the value equals 1 - up up to
    # eps, but the gradient does not (the normaliser is detached, not constant).
    logits, labels, mask = reference_example(2)
    x = tf.constant(logits[0])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        up, down = ops.normalized_up_down(
            x,
            10,
            tau=50.0,
            sort="neural",
            row_limit=tf.reduce_sum(mask, 1),
            col_mask=tf.ones_like(x),
        )
        a = tf.reduce_sum(down * tf.range(40, dtype=tf.float32))
        b = tf.reduce_sum((1.0 - up) * tf.range(40, dtype=tf.float32))
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4)
    assert np.max(np.abs(tape.gradient(a, x) - tape.gradient(b, x))) > 1e-3


def test_masked_equals_reference_without_padding():
    rng = np.random.default_rng(3)
    for num_stages in (1, 2, 3, 4):
        logits = [rng.normal(size=(3, 20)).astype(np.float32) for _ in range(num_stages)]
        labels = rng.integers(0, 6, size=(3, 20)).astype(np.float32)
        mask = np.ones((3, 20), np.float32)
        kw = dict(
            gt_num=4, stage_k=[5 + i for i in range(num_stages)], tau=2.0, label_matrix="soft"
        )
        ref, gref = _grads(logits, labels, mask, mode="reference", **kw)
        msk, gmsk = _grads(logits, labels, mask, mode="masked", **kw)
        np.testing.assert_allclose(float(msk["total"]), float(ref["total"]), rtol=1e-6)
        for a, b in zip(gmsk, gref):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-7)


def test_masked_mode_ignores_padding_position_and_content():
    rng = np.random.default_rng(11)
    b, n_valid, n = 3, 15, 22
    logits = [rng.normal(size=(b, n_valid)).astype(np.float32) for _ in range(2)]
    labels = rng.integers(0, 5, size=(b, n_valid)).astype(np.float32)
    base, gbase = _grads(
        logits,
        labels,
        np.ones((b, n_valid), np.float32),
        mode="masked",
        gt_num=3,
        stage_k=4,
        tau=1.0,
    )
    # Insert 7 padded slots at random places with garbage scores and labels.
    perm = rng.permutation(n)
    where = np.sort(perm[:n_valid])
    padded_logits = [rng.normal(scale=50, size=(b, n)).astype(np.float32) for _ in range(2)]
    padded_labels = rng.integers(0, 99, size=(b, n)).astype(np.float32)
    mask = np.zeros((b, n), np.float32)
    for x, px in zip(logits, padded_logits):
        px[:, where] = x
    padded_labels[:, where] = labels
    mask[:, where] = 1
    t, g = _grads(padded_logits, padded_labels, mask, mode="masked", gt_num=3, stage_k=4, tau=1.0)
    np.testing.assert_allclose(float(t["total"]), float(base["total"]), rtol=1e-5)
    for gp, gb in zip(g, gbase):
        np.testing.assert_allclose(gp.numpy()[:, where], gb.numpy(), rtol=1e-4, atol=1e-7)
        assert np.all(np.delete(gp.numpy(), where, axis=1) == 0)
