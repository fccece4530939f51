"""XLA, dtypes, bad input, degenerate requests and fuzzing of lcron_loss_terms."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lcron_examples import TWO_STAGE, reference_example

from lcron_tf.losses import lcron_loss_terms


@pytest.mark.parametrize("mode", ["reference", "masked"])
@pytest.mark.parametrize("sort", ["neural", "soft"])
def test_xla_equals_eager(mode, sort):
    logits, labels, mask = reference_example(2)

    def f(a, b):
        with tf.GradientTape() as tape:
            tape.watch([a, b])
            t = lcron_loss_terms([a, b], labels, mask, sort=sort, mode=mode)
        return t["total"], tape.gradient(t["total"], [a, b])

    xs = [tf.constant(x) for x in logits]
    eager = f(*xs)
    xla = tf.function(f, jit_compile=True)(*xs)
    np.testing.assert_allclose(float(xla[0]), float(eager[0]), rtol=1e-5)
    for a, b in zip(xla[1], eager[1]):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6)
    if mode == "reference" and sort == "neural":
        np.testing.assert_allclose(float(xla[0]), TWO_STAGE["total"], atol=1e-5)


def test_float64_matches_float32():
    logits, labels, mask = reference_example(3)
    t32 = lcron_loss_terms(logits, labels, mask)
    t64 = lcron_loss_terms([x.astype(np.float64) for x in logits], labels, mask)
    assert t64["total"].dtype == tf.float64
    np.testing.assert_allclose(float(t64["total"]), float(t32["total"]), rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(stage_logits=[]), "at least one stage"),
        (dict(stage_logits=np.zeros((2, 40), np.float32)), "list of"),
        (dict(labels=np.zeros((2, 39), np.float32)), "same shape"),
        (dict(mask=np.zeros((2, 40, 1), np.float32)), "rank 2"),
        (dict(stage_logits=[np.zeros(40, np.float32)] * 2), "rank 2"),
        (dict(stage_k=41), "stage_k"),
        (dict(stage_k=[10, 10, 10]), "one int per stage"),
        (dict(stage_k=0), "stage_k"),
        (dict(gt_num=41), "gt_num"),
        (dict(tau=0.0), "tau"),
        (dict(tau=-1.0), "tau"),
        (dict(sort="fast"), "sort"),
        (dict(mode="clean"), "mode"),
        (dict(label_matrix="hard"), "label_matrix"),
    ],
)
def test_bad_input_raises_clear_error(kwargs, match):
    logits, labels, mask = reference_example(2)
    args = dict(stage_logits=logits, labels=labels, mask=mask)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        lcron_loss_terms(**args)


def test_bad_shape_caught_at_trace_time_under_xla():
    f = tf.function(
        lambda a, lab, m: lcron_loss_terms([a, a], lab, m, stage_k=50)["total"], jit_compile=True
    )
    with pytest.raises(ValueError, match="stage_k"):
        f(tf.zeros((2, 40)), tf.zeros((2, 40)), tf.ones((2, 40)))


@pytest.mark.parametrize("mode", ["reference", "masked"])
def test_degenerate_requests_are_finite(mode):
    # row 0: fewer real candidates than k; row 1: all padded; row 2: full.
    rng = np.random.default_rng(0)
    xs = [tf.constant(rng.normal(size=(3, 12)), tf.float32) for _ in range(2)]
    labels = tf.constant(rng.integers(0, 5, size=(3, 12)), tf.float32)
    mask = np.ones((3, 12), np.float32)
    mask[0, 3:] = 0
    mask[1, :] = 0
    with tf.GradientTape() as tape:
        tape.watch(xs)
        t = lcron_loss_terms(xs, labels, tf.constant(mask), gt_num=4, stage_k=5, mode=mode)
    grads = tape.gradient(t["total"], xs)
    assert np.isfinite(float(t["total"]))
    for g in grads:
        assert np.all(np.isfinite(g.numpy()))
    single = np.stack([v.numpy() for v in t["single_per_request"]])
    # L_single is gated off for requests with <= k real candidates (both modes).
    assert np.all(single[:, :2] == 0)
    if mode == "masked":
        # No stage has to drop anything: weight 0, no gradient.
        np.testing.assert_array_equal(t["e2e_per_request"].numpy()[:2], [0.0, 0.0])
        for g in grads:
            assert np.all(g.numpy()[:2] == 0)
    else:
        # Official behaviour: all padded -> each column adds ln(1e6)/N to L_e2e, no gradient.
        np.testing.assert_allclose(
            t["e2e_per_request"].numpy()[1], np.log(1e6 + 1) - np.log(1), rtol=1e-4
        )
        for g in grads:
            assert np.all(g.numpy()[1] == 0)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    b=st.integers(1, 4),
    n=st.integers(2, 30),
    num_stages=st.integers(1, 3),
    scale=st.sampled_from([1e-3, 1.0, 30.0, 1e3]),
    n_labels=st.integers(1, 6),
    tau=st.sampled_from([0.05, 1.0, 50.0]),
    sort=st.sampled_from(["neural", "soft"]),
    mode=st.sampled_from(["reference", "masked"]),
    seed=st.integers(0, 2**16),
)
def test_fuzz_finite_values_and_gradients(b, n, num_stages, scale, n_labels, tau, sort, mode, seed):
    rng = np.random.default_rng(seed)
    xs = [tf.constant(rng.normal(scale=scale, size=(b, n)), tf.float32) for _ in range(num_stages)]
    if rng.random() < 0.3:  # exact score ties
        xs = [tf.round(x) for x in xs]
    labels = tf.constant(rng.integers(0, n_labels, size=(b, n)), tf.float32)
    mask = tf.constant(rng.random((b, n)) < 0.8, tf.float32)
    k = int(rng.integers(1, n + 1))
    gt = int(rng.integers(1, n + 1))
    with tf.GradientTape() as tape:
        tape.watch(xs)
        t = lcron_loss_terms(xs, labels, mask, gt_num=gt, stage_k=k, tau=tau, sort=sort, mode=mode)
    assert np.isfinite(float(t["total"])) and float(t["total"]) >= 0
    for g in tape.gradient(t["total"], xs):
        assert np.all(np.isfinite(g.numpy()))
