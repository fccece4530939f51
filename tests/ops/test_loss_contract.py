"""The numeric contract of every cascade loss function (lcron_tf.ops.contract).

Each property is checked on every loss of ``loss_cases.CASES`` (LCRON in its dense, lean and
SoftSort forms, its two partial forms, and the seven baselines, some in official forms).
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from loss_cases import CASES, LOG_SIGMA, N, call, poison, requests

from lcron_tf.ops import contract, lcron
from lcron_tf.ops import labels as labels_ops

NAMES = sorted(CASES)
BATCH = 128
EXAMPLES = 8  # x BATCH = 1,024 requests per loss, eagerly and again under XLA


def _value_and_grads(name, logits, labels, mask):
    xs = [tf.constant(x) for x in logits]
    with tf.GradientTape() as tape:
        tape.watch(xs)
        per = call(name, xs, tf.constant(labels), tf.constant(mask)).per_request
        total = tf.reduce_sum(per * tf.range(1.0, 1.0 + tf.cast(tf.size(per), per.dtype)))
    return per, tape.gradient(total, xs)


_JITTED: dict = {}


def _jitted(name):
    if name not in _JITTED:
        _JITTED[name] = tf.function(_value_and_grads_graph(name), jit_compile=True)
    return _JITTED[name]


def _value_and_grads_graph(name):
    def f(a, b, labels, mask):
        with tf.GradientTape() as tape:
            tape.watch([a, b])
            per = call(name, [a, b], labels, mask).per_request
            total = tf.reduce_sum(per * tf.range(1.0, 1.0 + tf.cast(tf.size(per), per.dtype)))
        return per, tape.gradient(total, [a, b])

    return f


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "xla"])
@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**31 - 1))
def test_masked_loss_ignores_anything_in_padded_slots(name, jit, seed):
    """+-inf / NaN scores and NaN / inf labels in padded slots change nothing, not even a bit."""
    rng = np.random.default_rng(seed)
    logits, labels, mask = requests(rng, BATCH, min_valid=0)
    bad_logits, bad_labels = poison(rng, logits, labels, mask)
    if jit:
        f = _jitted(name)
        clean = f(*[tf.constant(v) for v in (*logits, labels, mask)])
        dirty = f(*[tf.constant(v) for v in (*bad_logits, bad_labels, mask)])
    else:
        clean = _value_and_grads(name, logits, labels, mask)
        dirty = _value_and_grads(name, bad_logits, bad_labels, mask)
    assert np.all(np.isfinite(dirty[0].numpy()))
    np.testing.assert_array_equal(dirty[0].numpy(), clean[0].numpy())
    for g_dirty, g_clean in zip(dirty[1], clean[1]):
        g = g_dirty.numpy()
        assert np.all(np.isfinite(g))
        np.testing.assert_array_equal(g, g_clean.numpy())
        assert np.all(g[mask == 0] == 0)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("name", NAMES)
def test_masked_loss_equals_the_request_with_padded_slots_removed(name, seed):
    # A fixed seed per (name, seed): ``hash(str)`` changes with every process.
    rng = np.random.default_rng([zlib.crc32(name.encode()), seed])
    logits, labels, mask = requests(rng, 10)
    bad_logits, bad_labels = poison(rng, logits, labels, mask)
    per, grads = _value_and_grads(name, bad_logits, bad_labels, mask)
    for r in range(len(mask)):
        keep = mask[r] > 0
        small = [x[r : r + 1, keep] for x in logits]
        per_r, grads_r = _value_and_grads(
            name, small, labels[r : r + 1, keep], np.ones((1, keep.sum()), np.float32)
        )
        # The removed request is row 0 of its own batch: its weight in the weighted sum is 1.
        np.testing.assert_allclose(per[r].numpy(), per_r[0].numpy(), rtol=2e-5, atol=1e-6)
        for g, g_r in zip(grads, grads_r):
            np.testing.assert_allclose(
                g[r].numpy()[keep] / (r + 1), g_r[0].numpy(), rtol=2e-4, atol=2e-6
            )


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("name", NAMES)
def test_low_precision_inputs_compute_in_float32(name, dtype):
    rng = np.random.default_rng(3)
    logits, labels, mask = requests(rng, 8)
    low = [tf.cast(tf.constant(x), dtype) for x in logits]
    with tf.GradientTape() as tape:
        tape.watch(low)
        per = call(name, low, tf.cast(labels, dtype), mask).per_request
        total = tf.reduce_sum(per)
    grads = tape.gradient(total, low)
    assert per.dtype == tf.float32
    # Equal to float32 on the same (rounded) inputs: the computation itself is float32.
    want = call(name, [tf.cast(x, tf.float32) for x in low], labels, mask).per_request
    np.testing.assert_allclose(per.numpy(), want.numpy(), rtol=1e-6, atol=1e-7)
    for g in grads:
        assert g.dtype == dtype
        assert np.all(np.isfinite(tf.cast(g, tf.float32).numpy()))
    assert any(np.any(tf.cast(g, tf.float32).numpy() != 0) for g in grads)


@pytest.mark.parametrize("name", NAMES)
def test_empty_batch_gives_zero_with_zero_gradients(name):
    logits = [tf.zeros([0, N]) for _ in range(2)]
    with tf.GradientTape() as tape:
        tape.watch(logits)
        terms = call(name, logits, tf.zeros([0, N]), tf.zeros([0, N]))
        mean = contract.batch_mean(terms.per_request)
    assert terms.per_request.shape == (0,)
    assert float(mean) == 0.0
    for g in tape.gradient(mean, logits):
        assert g is None or g.shape == (0, N)
    t = lcron.lcron_loss_terms(logits, tf.zeros([0, N]), tf.zeros([0, N]), gt_num=3, stage_k=3)
    assert float(t["e2e"]) == 0.0 and float(t["total"]) == 0.0


def test_label_magnitudes_up_to_float32_range_never_tie_with_padding():
    # Valid labels at -3.4e38 (their own "max + 1" is absorbed by rounding), padded NaN.
    labels = np.array([[-3.4e38, -3.0e38, -3.4e38, 0.0, 0.0]], np.float32)
    mask = np.array([[1, 1, 1, 0, 0]], np.float32)
    start, size = labels_ops.tie_groups(labels, mask)
    np.testing.assert_array_equal(start.numpy()[0, :3], [1, 0, 1])
    np.testing.assert_array_equal(size.numpy()[0, :3], [2, 1, 2])
    rng = np.random.default_rng(8)
    logits, small, m = requests(rng, 16)
    huge = np.where(m > 0, small * 1e37 - 3.0e38, np.nan).astype(np.float32)
    for name in ("lcron", "stage_topk", "fs_ranknet", "bce_tiers", "arf_v2"):
        a = call(name, logits, small, m).per_request.numpy()
        b = call(name, logits, huge, m).per_request.numpy()  # same order of labels
        np.testing.assert_allclose(b, a, rtol=1e-6, err_msg=name)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(stage_k=2.0), "stage_k"),
        (dict(stage_k=True), "stage_k"),
        (dict(stage_k=None), "stage_k"),
        (dict(stage_k="10"), "stage_k"),
        (dict(gt_num=3.0), "gt_num"),
        (dict(tau=1e-40), "tau"),
        (dict(tau=float("inf")), "tau"),
        (dict(tau=float("nan")), "tau"),
        (dict(mode="clean"), "mode"),
        (dict(check_numerics="yes"), "check_numerics"),
        (dict(nope=1), "nope"),
    ],
)
def test_bad_options_raise_value_error_naming_the_argument(kwargs, match):
    rng = np.random.default_rng(0)
    logits, labels, mask = requests(rng, 2)
    options = {**dict(gt_num=3, stage_k=3), **kwargs}
    with pytest.raises(ValueError, match=match):
        lcron.lcron_loss(logits, labels, mask, **options)
    with pytest.raises(ValueError, match=match):
        lcron.LcronOptions.from_args((), options)


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs_raise_value_error_naming_the_argument(name):
    rng = np.random.default_rng(1)
    logits, labels, mask = requests(rng, 3)
    ragged = tf.RaggedTensor.from_row_lengths(tf.zeros([10]), [4, 6])
    with pytest.raises(ValueError, match="ragged"):
        call(name, [ragged, ragged], labels, mask)
    with pytest.raises(ValueError, match="labels"):
        call(name, logits, tf.RaggedTensor.from_row_lengths(tf.zeros([10]), [4, 6]), mask)
    half = mask.copy()
    half[0, 0] = 0.5
    with pytest.raises(ValueError, match="mask"):
        call(name, logits, labels, half)
    with pytest.raises(ValueError, match="mask"):
        call(name, logits, labels, mask * 2.0)
    with pytest.raises(ValueError, match="stage_logits"):
        call(name, tf.stack(logits, axis=1), labels, mask)


def test_mask_values_are_checked_when_the_graph_runs():
    rng = np.random.default_rng(2)
    logits, labels, mask = requests(rng, 3)
    f = tf.function(lambda a, b, lab, m: call("lcron", [a, b], lab, m).per_request)
    half = mask.copy()
    half[1, 2] = 0.5
    with pytest.raises(tf.errors.InvalidArgumentError, match="mask"):
        f(*logits, labels, half)


@pytest.mark.parametrize(
    "name", ["lcron", "lcron_lean", "icc", "rankflow", "fs_lambdaloss", "arf_v2"]
)
def test_k_above_a_list_size_known_only_at_run_time_acts_as_padding(name):
    """N = 3 < k at run time = the same 3 items padded to a list size >= k (no error).

    For LCRON that is weight 0 (loss 0, zero gradients), as every request with n <= k.
    """
    extra = {"stage_k": 10} if "lcron" in name else {"quotas": (8, 6)}
    spec = tf.TensorSpec([None, None], tf.float32)

    @tf.function(input_signature=[spec, spec, spec, spec])
    def dynamic(a, b, lab, m):
        with tf.GradientTape() as tape:
            tape.watch([a, b])
            per = call(name, [a, b], lab, m, **extra).per_request
            total = tf.reduce_sum(per)
        return per, tape.gradient(total, [a, b])

    x = np.array([[0.5, -1.0, 2.0], [1.0, 0.0, 0.3]], np.float32)
    lab = np.array([[2.0, 1.0, 0.0], [0.0, 1.0, 2.0]], np.float32)
    per, grads = dynamic(x, -x, lab, np.ones((2, 3), np.float32))
    pad = lambda v: np.pad(v, [[0, 0], [0, 9]])  # noqa: E731
    xs = [tf.constant(pad(x)), tf.constant(pad(-x))]
    with tf.GradientTape() as tape:
        tape.watch(xs)
        want = call(name, xs, pad(lab), pad(np.ones((2, 3), np.float32)), **extra).per_request
        want_total = tf.reduce_sum(want)
    want_grads = tape.gradient(want_total, xs)
    np.testing.assert_allclose(per.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)
    for g, w in zip(grads, want_grads):
        np.testing.assert_allclose(g.numpy(), w.numpy()[:, :3], rtol=1e-4, atol=1e-6)
    if "lcron" in name:
        np.testing.assert_allclose(per.numpy(), [sum(LOG_SIGMA)] * 2, atol=1e-6)  # ln prod sigma
        for g in grads:
            np.testing.assert_allclose(g.numpy(), 0.0, atol=1e-7)


def test_non_finite_valid_scores_propagate_unless_check_numerics():
    rng = np.random.default_rng(4)
    logits, labels, mask = requests(rng, 3)
    logits[0][0, np.argmax(mask[0])] = np.nan
    per = call("lcron", logits, labels, mask).per_request.numpy()
    assert np.isnan(per[0]) and np.all(np.isfinite(per[1:]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="stage_logits\\[0\\]"):
        call("lcron", logits, labels, mask, check_numerics=True)
    bad_labels = labels.copy()
    bad_labels[1, np.argmax(mask[1])] = np.inf
    with pytest.raises(tf.errors.InvalidArgumentError, match="labels"):
        call("bce", [x.copy() for x in requests(rng, 3)[0]], bad_labels, mask,
             check_numerics=True)


# LCRON's terms and ARF-v2's L_relax divide by a *detached* normaliser (paper Eq. 10), so their
# autodiff gradient is by design not the derivative finite differences see; those are checked
# against an independent torch re-derivation instead (tests/ops/test_lcron_parity.py). RankFlow's
# distillation target stop_gradient(s_t) is detached too; it is checked with its distillation
# switched off.
DETACHED = {"lcron", "lcron_lean", "lcron_soft", "lcron_soft_lean", "cascade_recall", "stage_topk",
            "arf_v2", "rankflow"}


@pytest.mark.parametrize("name", sorted(set(NAMES) - DETACHED) + ["rankflow_no_distill"])
def test_gradients_match_finite_differences_float64(name):
    rng = np.random.default_rng(6)
    logits, labels, mask = requests(rng, 2, n=7, min_valid=5)
    extra = {"quotas": (5, 3)} if "quotas" in CASES[name.replace("_no_distill", "")][1] else {}
    if name == "rankflow_no_distill":
        name, extra = "rankflow", {**extra, "distill_weight": 0.0}
    labels = labels.astype(np.float64)

    def f(a, b):
        return call(name, [a, b], labels, mask, dtype=tf.float64, **extra).per_request

    xs = [tf.constant(x.astype(np.float64)) for x in logits]
    theoretical, numerical = tf.test.compute_gradient(f, xs, delta=1e-6)
    for t, n in zip(theoretical, numerical):
        np.testing.assert_allclose(t, n, atol=1e-6, rtol=1e-4)
