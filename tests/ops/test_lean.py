"""The lean (no [B, N, N]) LCRON up/down paths equal the dense reference: values and gradients."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from lcron_examples import reference_example

from lcron_tf.ops import cascade, lean, sorting, topk, validation

SORTS = ["neural", "soft"]
MODES = ["reference", "masked"]


def make_case(seed, batch, n, dtype=np.float64, ties=False, pad=True, scale=1.0):
    """Scores, labels, mask, upstream weights for one random case."""
    rng = np.random.default_rng(seed)
    if ties:
        scores = rng.integers(-3, 4, size=(batch, n)).astype(dtype) * 0.5 * scale
    else:
        scores = (rng.normal(size=(batch, n)) * scale).astype(dtype)
    mask = np.ones((batch, n), dtype)
    if pad:
        mask = (rng.random((batch, n)) > 0.3).astype(dtype)
        mask[0] = 1.0  # one full request
        if batch > 2:
            mask[-1] = 0.0  # one empty request
    g_up = rng.normal(size=(batch, n)).astype(dtype)
    g_down = rng.normal(size=(batch, n)).astype(dtype)
    return scores, mask, g_up, g_down


def mode_args(mode, mask):
    """(row_limit, col_mask, sort_mask) as lcron_loss_terms builds them."""
    count = mask.sum(axis=1)
    if mode == "reference":
        prefix = (np.arange(mask.shape[1])[None, :] < count[:, None]).astype(mask.dtype)
        return count, prefix, None
    return count, mask, mask


def up_down_and_grad(impl, scores, k, tau, sort, mode, mask, g_up, g_down, jit=False, **kw):
    row_limit, col_mask, sort_mask = mode_args(mode, mask)

    def f(s):
        with tf.GradientTape() as tape:
            tape.watch(s)
            if impl == "lean" and kw:
                up, down = lean.normalized_up_down_lean(
                    s, k, tau=tau, sort=sort, row_limit=row_limit, col_mask=col_mask,
                    sort_mask=sort_mask, eps=topk.EPS, **kw,
                )
            else:
                up, down = topk.normalized_up_down(
                    s, k, tau=tau, sort=sort, row_limit=row_limit, col_mask=col_mask,
                    sort_mask=sort_mask, impl=impl,
                )
            loss = tf.reduce_sum(up * g_up) + tf.reduce_sum(down * g_down)
        return up, down, tape.gradient(loss, s)

    if jit:
        f = tf.function(f, jit_compile=True)
    return [t.numpy() for t in f(tf.constant(scores))]


def assert_close(got, want, atol, what=""):
    for name, a, b in zip(("up", "down", "grad"), got, want):
        np.testing.assert_allclose(a, b, rtol=0, atol=atol, err_msg=f"{what} {name}")


def tie_block_sums(grad, scores):
    """Sum the gradient over items with equal scores (per request)."""
    out = np.zeros_like(grad)
    for b in range(scores.shape[0]):
        for v in np.unique(scores[b]):
            sel = scores[b] == v
            out[b, sel] = grad[b, sel].sum()
    return out


# ----------------------------------------------------------------------------- equality


@pytest.mark.parametrize("sort", SORTS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "seed,batch,n,k,tau,chunk",
    [
        (0, 3, 17, 5, 1.0, 4),  # N not a multiple of the chunk
        (1, 4, 40, 10, 50.0, 16),  # paper size, tau = 50
        (2, 2, 50, 10, 0.3, 7),
        (3, 3, 9, 9, 2.0, 2),  # k = N
        (4, 2, 131, 10, 0.5, None),  # above the auto threshold, odd N
    ],
)
def test_lean_equals_dense_float64(sort, mode, seed, batch, n, k, tau, chunk):
    scores, mask, gu, gd = make_case(seed, batch, n)
    want = up_down_and_grad("dense", scores, k, tau, sort, mode, mask, gu, gd)
    got = up_down_and_grad("lean", scores, k, tau, sort, mode, mask, gu, gd, chunk_size=chunk)
    assert_close(got, want, 1e-11, f"{sort} {mode}")


@pytest.mark.parametrize("sort", SORTS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("seed,batch,n,k,tau", [(5, 4, 40, 10, 50.0), (6, 3, 23, 4, 1.0)])
def test_lean_equals_dense_float32(sort, mode, seed, batch, n, k, tau):
    scores, mask, gu, gd = make_case(seed, batch, n, np.float32)
    want = up_down_and_grad("dense", scores, k, tau, sort, mode, mask, gu, gd)
    got = up_down_and_grad("lean", scores, k, tau, sort, mode, mask, gu, gd, chunk_size=8)
    assert all(a.dtype == np.float32 for a in got)
    assert_close(got, want, 1e-5, f"{sort} {mode}")


@pytest.mark.parametrize("mode", MODES)
def test_neural_ties_exact(mode):
    """Tied scores: the sort-based b has a hand-written gradient equal to the dense one."""
    scores, mask, gu, gd = make_case(7, 4, 30, ties=True)
    want = up_down_and_grad("dense", scores, 10, 1.0, "neural", mode, mask, gu, gd)
    for chunk in (5, None):
        got = up_down_and_grad("lean", scores, 10, 1.0, "neural", mode, mask, gu, gd,
                               chunk_size=chunk)
        assert_close(got, want, 1e-11, f"neural ties {mode}")


@pytest.mark.parametrize("mode", MODES)
def test_soft_ties_block_sums(mode):
    """Tied scores: SoftSort subgradients differ inside a tie block, their sums do not."""
    scores, mask, gu, gd = make_case(8, 4, 30, ties=True)
    want = up_down_and_grad("dense", scores, 10, 1.0, "soft", mode, mask, gu, gd)
    got = up_down_and_grad("lean", scores, 10, 1.0, "soft", mode, mask, gu, gd)
    np.testing.assert_allclose(got[0], want[0], atol=1e-12)
    np.testing.assert_allclose(got[1], want[1], atol=1e-12)
    np.testing.assert_allclose(
        tie_block_sums(got[2], scores), tie_block_sums(want[2], scores), atol=1e-11
    )


@pytest.mark.parametrize("sort", SORTS)
def test_large_n_float64(sort):
    """N = 300 with a shifted score range: many chunks, long scans."""
    scores, mask, gu, gd = make_case(9, 2, 300, scale=2.0)
    scores = scores + 7.0
    want = up_down_and_grad("dense", scores, 10, 0.5, sort, "masked", mask, gu, gd)
    got = up_down_and_grad("lean", scores, 10, 0.5, sort, "masked", mask, gu, gd)
    assert_close(got, want, 1e-10, sort)


def test_float32_lean_not_less_accurate():
    """At large N * spread / tau float32 loses digits in both paths; lean is no worse."""
    scores, mask, gu, gd = make_case(10, 2, 400, pad=False)
    scores = scores + 5.0
    truth = up_down_and_grad("dense", scores, 10, 0.5, "neural", "reference", mask, gu, gd)
    args = [x.astype(np.float32) for x in (scores, mask, gu, gd)]
    err = {}
    for impl in ("dense", "lean"):
        got = up_down_and_grad(impl, args[0], 10, 0.5, "neural", "reference", args[1], *args[2:])
        err[impl] = max(np.abs(a - b).max() / (np.abs(b).max() + 1e-30)
                        for a, b in zip(got, truth))
    assert err["lean"] <= 2.0 * err["dense"] + 1e-6, err


# ----------------------------------------------------------------------------- XLA


@pytest.mark.parametrize("sort", SORTS)
@pytest.mark.parametrize("ties", [False, True])
def test_lean_under_xla(sort, ties):
    scores, mask, gu, gd = make_case(11, 3, 21, ties=ties)
    for mode in MODES:
        want = up_down_and_grad("dense", scores, 6, 1.0, sort, mode, mask, gu, gd)
        got = up_down_and_grad("lean", scores, 6, 1.0, sort, mode, mask, gu, gd, jit=True,
                               chunk_size=4)
        if ties and sort == "soft":
            got[2], want[2] = tie_block_sums(got[2], scores), tie_block_sums(want[2], scores)
        assert_close(got, want, 1e-11, f"xla {sort} {mode}")


def test_lean_dynamic_shapes():
    """Unknown batch and list size (graph mode, no XLA): chunk count and scans are dynamic."""
    scores, mask, gu, gd = make_case(12, 3, 19)
    count, col, _ = mode_args("masked", mask)
    for sort in SORTS:

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float64)] * 3)
        def f(s, m, c, sort=sort):
            with tf.GradientTape() as tape:
                tape.watch(s)
                up, down = lean.normalized_up_down_lean(
                    s, 5, tau=1.0, sort=sort, row_limit=tf.reduce_sum(m, 1), col_mask=c,
                    sort_mask=m, eps=topk.EPS, chunk_size=4,
                )
                loss = tf.reduce_sum(up * gu) + tf.reduce_sum(down * gd)
            return up, down, tape.gradient(loss, s)

        got = [t.numpy() for t in f(tf.constant(scores), tf.constant(mask), tf.constant(col))]
        want = up_down_and_grad("dense", scores, 5, 1.0, sort, "masked", mask, gu, gd)
        assert_close(got, want, 1e-11, f"dynamic {sort}")


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("sort", SORTS)
@pytest.mark.parametrize("mode", MODES)
def test_lean_compute_gradient_float64(sort, mode):
    """Finite differences vs the custom gradients of the raw (q, d) masses."""
    scores, mask, gu, gd = make_case(13, 2, 7)
    row_limit, col_mask, sort_mask = mode_args(mode, mask)
    fn = lean.neural_sort_up_down if sort == "neural" else lean.soft_sort_up_down
    kw = {"chunk_size": 3} if sort == "neural" else {}

    def f(s):
        q, d = fn(s, 3, tau=0.7, row_limit=row_limit, col_mask=col_mask, sort_mask=sort_mask,
                  **kw)
        return tf.concat([q, d * 1.3], axis=1)

    theoretical, numerical = tf.test.compute_gradient(f, [tf.constant(scores)], delta=1e-6)
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-7)


def test_abs_diff_row_sums_sorted():
    rng = np.random.default_rng(14)
    for ties in (False, True):
        s = rng.integers(0, 4, (3, 11)).astype(np.float64) if ties else rng.normal(size=(3, 11))
        m = (rng.random((3, 11)) > 0.3).astype(np.float64)
        h = rng.normal(size=(3, 11))
        for mask in (None, m):
            x = tf.constant(s)
            with tf.GradientTape(persistent=True) as tape:
                tape.watch(x)
                b_dense = sorting.abs_diff_row_sums(x, mask)
                b_sorted = sorting.abs_diff_row_sums_sorted(x, mask)
                b_fused = lean.abs_diff_row_sums_fused(x, None if mask is None else mask > 0)
                losses = [tf.reduce_sum(b * h) for b in (b_dense, b_sorted, b_fused)]
            grads = [tape.gradient(v, x).numpy() for v in losses]
            np.testing.assert_allclose(b_sorted, b_dense, atol=1e-12)
            np.testing.assert_allclose(b_fused, b_dense, atol=1e-12)
            np.testing.assert_allclose(grads[1], grads[0], atol=1e-12)
            np.testing.assert_allclose(grads[2], grads[0], atol=1e-12)
    s = tf.constant(rng.normal(size=(2, 6)))
    theoretical, numerical = tf.test.compute_gradient(
        lambda x: sorting.abs_diff_row_sums_sorted(x, m[:2, :6]), [s]
    )
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-7)


# ----------------------------------------------------------------------------- full loss


@pytest.mark.parametrize("num_stages", [2, 3])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sort", SORTS)
def test_lcron_loss_terms_lean_equals_dense(num_stages, mode, sort):
    logits, labels, mask = reference_example(num_stages)
    mask = mask.copy()
    mask[0, -7:] = 0.0  # more padding
    results = {}
    for impl in ("dense", "lean"):
        xs = [tf.constant(x) for x in logits]
        with tf.GradientTape() as tape:
            tape.watch(xs)
            terms = cascade.lcron_loss_terms(xs, labels, mask, sort=sort, mode=mode, impl=impl)
        results[impl] = (terms, tape.gradient(terms["total"], xs))
    (t_d, g_d), (t_l, g_l) = results["dense"], results["lean"]
    np.testing.assert_allclose(float(t_l["total"]), float(t_d["total"]), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(float(t_l["e2e"]), float(t_d["e2e"]), atol=1e-5)
    for a, b in zip(t_l["single"], t_d["single"]):
        np.testing.assert_allclose(float(a), float(b), atol=1e-5)
    for a, b in zip(g_l, g_d):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_lcron_loss_terms_lean_float64_three_stage(mode):
    rng = np.random.default_rng(16)
    b, n = 3, 37
    logits = [rng.normal(size=(b, n)) for _ in range(3)]
    labels = rng.integers(0, 6, size=(b, n)).astype(np.float64)
    mask = (rng.random((b, n)) > 0.2).astype(np.float64)
    mask[0] = 1.0
    out = {}
    for impl in ("dense", "lean"):
        xs = [tf.constant(x) for x in logits]
        with tf.GradientTape() as tape:
            tape.watch(xs)
            terms = cascade.lcron_loss_terms(
                xs, labels, mask, gt_num=5, stage_k=[12, 8, 5], tau=2.0, mode=mode, impl=impl
            )
        out[impl] = (terms["total"].numpy(), [g.numpy() for g in tape.gradient(terms["total"], xs)])
    np.testing.assert_allclose(out["lean"][0], out["dense"][0], rtol=1e-12)
    for a, c in zip(out["lean"][1], out["dense"][1]):
        np.testing.assert_allclose(a, c, atol=1e-12)


def test_lcron_loss_terms_lean_under_xla():
    logits, labels, mask = reference_example(2)

    @tf.function(jit_compile=True)
    def f(a, c):
        with tf.GradientTape() as tape:
            tape.watch([a, c])
            t = cascade.lcron_loss_terms([a, c], labels, mask, impl="lean")
        return t["total"], tape.gradient(t["total"], [a, c])

    xs = [tf.constant(x) for x in logits]
    total, grads = f(*xs)
    with tf.GradientTape() as tape:
        tape.watch(xs)
        t = cascade.lcron_loss_terms(xs, labels, mask, impl="dense")
    want = tape.gradient(t["total"], xs)
    np.testing.assert_allclose(float(total), float(t["total"]), rtol=1e-6)
    for a, b in zip(grads, want):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)


# ----------------------------------------------------------------------------- dispatch


def test_resolve_impl():
    small = topk.LEAN_MIN_LIST_SIZE["neural"]
    assert topk.resolve_impl("auto", "neural", small) == "dense"
    assert topk.resolve_impl("auto", "neural", small + 1) == "lean"
    assert topk.resolve_impl("auto", "soft", None) == "lean"
    assert topk.resolve_impl("dense", "soft", 10**6) == "dense"
    assert topk.resolve_impl("lean", "neural", 3) == "lean"
    assert validation.IMPL_CHOICES == ("auto", "dense", "lean")


def test_auto_takes_the_measured_faster_path_with_the_same_numbers():
    """impl="auto" is lean at the paper's N = 40 (measured faster) and equal to dense there."""
    assert topk.resolve_impl("auto", "neural", 40) == "lean"
    assert topk.resolve_impl("auto", "soft", 24) == "dense"
    logits, labels, mask = reference_example(2)
    auto = cascade.lcron_loss_terms(logits, labels, mask, mode="reference")["total"]
    dense = cascade.lcron_loss_terms(logits, labels, mask, mode="reference", impl="dense")
    np.testing.assert_allclose(float(auto), float(dense["total"]), rtol=1e-6)


@pytest.mark.parametrize("bad", ["fast", "", None, "Lean"])
def test_bad_impl_raises(bad):
    scores, mask, _, _ = make_case(17, 2, 5)
    with pytest.raises(ValueError, match="impl"):
        topk.normalized_up_down(scores, 2, tau=1.0, sort="neural", row_limit=mask.sum(1),
                                col_mask=mask, impl=bad)
    logits, labels, lmask = reference_example(2)
    with pytest.raises(ValueError, match="impl"):
        cascade.lcron_loss_terms(logits, labels, lmask, impl=bad)


@pytest.mark.parametrize("chunk", [0, -1, 2.5, True])
def test_bad_chunk_size_raises(chunk):
    scores, mask, _, _ = make_case(18, 2, 5)
    with pytest.raises(ValueError, match="chunk_size"):
        lean.neural_sort_up_down(scores, 2, tau=1.0, row_limit=mask.sum(1), col_mask=mask,
                                 chunk_size=chunk)


def test_default_chunk_size():
    assert lean.default_chunk_size(64, 1000) == 16
    assert lean.default_chunk_size(1024, 40) == 16
    assert lean.default_chunk_size(16, 10000) == 4
    assert lean.default_chunk_size(4096, 4096) == 1
    assert lean.default_chunk_size(1, 8) == 8
    assert lean.default_chunk_size(None, None) >= 1
