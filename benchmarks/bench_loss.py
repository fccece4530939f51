"""LCRON loss forward+backward: dense [B, N, N] path vs the lean paths (lcron_tf.ops.lean).

One command::

    .venv/bin/python benchmarks/bench_loss.py            # full (< 10 min on 2 CPU cores)
    .venv/bin/python benchmarks/bench_loss.py --quick    # smaller repeats, no N = 10,000 training

For every case (batch B, list size N, stages S) and relaxed sort (NeuralSort, SoftSort) it
prints, for impl = dense and impl = lean, measured in the same process and interleaved
(dense, lean, dense, lean, ...) so that load changes on a shared machine hit both:

* ``loss ms``: median wall time of one ``lcron_loss_terms(...)["total"]`` forward +
  gradient w.r.t. every stage's logits, under ``tf.function(jit_compile=True)``, after a
  warm-up call (which includes the XLA compile, reported as ``compile s``);
* ``peak MiB``: peak bytes of TF's CPU allocator during one call, above what was allocated
  before it (``tf.config.experimental.reset_memory_stats`` / ``get_memory_info("CPU:0")``;
  XLA's temporary buffers come from that allocator: the calibration line checks it);
* ``up/dn ms`` / ``peak MiB``: the same for the S stages' ``normalized_up_down`` alone
  (what ``impl`` changes; the label part of the loss is excluded);
* the lean/dense ratios of both, from the same run.

Dense at N = 10,000 is not run: its size is computed and reported as "does not fit".
Then: an XLA scaling check of the scan-based parts (time per element at growing N with B * N
fixed), a short N = 10,000 training run with the lean NeuralSort path, and the roofline
inputs at the paper size (B = 1024, N = 40, 2 stages).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np

# TF's CPU allocator keeps the peak-memory statistics read below only when it is the BFC
# allocator (otherwise get_memory_info("CPU:0") raises "Cannot reset memory stats").
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
import tensorflow as tf  # noqa: E402, I001

import lcron_tf  # noqa: F401  (binds tf.keras to Keras 2 first)
from lcron_tf.ops import cascade, lean, topk
from lcron_tf.ops import labels as labels_ops

CASES = ((1024, 40, 2), (256, 200, 3), (64, 1000, 3), (16, 10000, 3))
DENSE_MAX_ELEMENTS = 1_000_000_000  # B * N^2 above which dense is reported, not run
GIB = 1 << 30
MIB = 1 << 20


# ----------------------------------------------------------------------------- inputs


def make_inputs(
    batch: int, n: int, stages: int, seed: int = 0
) -> tuple[list, tf.Tensor, tf.Tensor]:
    """RecFlow-like requests: 10 positives with distinct labels, tied negative groups, padding.

    Returns ``(stage_logits, labels, mask)``; float32, ``[B, N]`` each.
    """
    rng = np.random.default_rng(seed)
    logits = [tf.constant(rng.normal(size=(batch, n)).astype(np.float32)) for _ in range(stages)]
    groups = np.array([7.0, 6.0, 5.0, 4.0])
    labels = np.repeat(groups, -(-n // len(groups)))[:n][None, :].repeat(batch, 0)
    labels[:, :10] = 30.0 - np.arange(10)
    counts = np.full(batch, n)
    short = rng.random(batch) < 0.1  # 10% of the requests are padded
    counts[short] = rng.integers(10, n + 1, size=short.sum())
    mask = (np.arange(n)[None, :] < counts[:, None]).astype(np.float32)
    return logits, tf.constant(labels.astype(np.float32)), tf.constant(mask)


# ----------------------------------------------------------------------------- measuring


def _block(x: object) -> None:
    for t in tf.nest.flatten(x):
        t.numpy()


def peak_bytes(fn: Callable, *args: object) -> int:
    """Peak CPU-allocator bytes of one call of ``fn`` above the bytes live before it."""
    tf.config.experimental.reset_memory_stats("CPU:0")
    before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    _block(fn(*args))
    return int(tf.config.experimental.get_memory_info("CPU:0")["peak"] - before)


def timed(fn: Callable, *args: object) -> float:
    start = time.perf_counter()
    _block(fn(*args))
    return time.perf_counter() - start


def loss_step(
    sort: str, impl: str, labels: tf.Tensor, mask: tf.Tensor, jit: bool = True
) -> Callable:
    def step(*logits: tf.Tensor) -> tuple:
        with tf.GradientTape() as tape:
            tape.watch(logits)
            total = cascade.lcron_loss_terms(list(logits), labels, mask, sort=sort, impl=impl)[
                "total"
            ]
        return total, tape.gradient(total, logits)

    return tf.function(step, jit_compile=jit)


def up_down_step(sort: str, impl: str, mask: tf.Tensor, tau: float = 50.0, k: int = 10) -> Callable:
    count = tf.reduce_sum(mask, axis=1)
    n = mask.shape[1]
    col = tf.cast(tf.range(n)[None, :] < tf.cast(count, tf.int32)[:, None], tf.float32)
    weights = tf.constant(np.random.default_rng(1).normal(size=mask.shape).astype(np.float32))

    def step(*logits: tf.Tensor) -> tuple:
        with tf.GradientTape() as tape:
            tape.watch(logits)
            total = 0.0
            for x in logits:
                up, down = topk.normalized_up_down(
                    x, k, tau=tau, sort=sort, row_limit=count, col_mask=col, impl=impl
                )
                total += tf.reduce_sum(up * weights) - tf.reduce_sum(down * weights)
        return total, tape.gradient(total, logits)

    return tf.function(step, jit_compile=True)


def measure_pair(fns: dict[str, Callable], args: Sequence, repeats: int) -> dict[str, dict]:
    """Compile each fn; one call each with the peak memory; then ``repeats - 1`` interleaved."""
    out: dict[str, dict] = {}
    for name, fn in fns.items():
        start = time.perf_counter()
        _block(fn(*args))
        out[name] = {"compile_s": time.perf_counter() - start}
    for name, fn in fns.items():
        tf.config.experimental.reset_memory_stats("CPU:0")
        before = tf.config.experimental.get_memory_info("CPU:0")["current"]
        out[name]["times"] = [timed(fn, *args)]
        out[name]["peak"] = int(tf.config.experimental.get_memory_info("CPU:0")["peak"] - before)
    for _ in range(repeats - 1):
        for name, fn in fns.items():
            out[name]["times"].append(timed(fn, *args))
    for r in out.values():
        r["median_ms"] = 1e3 * statistics.median(r["times"])
        r["min_ms"] = 1e3 * min(r["times"])
    return out


# ----------------------------------------------------------------------------- sections

CROSSOVER_NS = (10, 16, 24, 32, 40, 50, 64, 100)
CROSSOVER_SHAPES = ((1024, 2), (256, 3))  # (B, stages)


def crossover(sorts: Sequence[str], repeats: int) -> list[dict]:
    """Dense vs lean loss fwd+bwd over N, XLA and plain graph: where ``impl="auto"`` switches.

    Returns one row per (sort, jit, B, stages, N) with both medians and ``lean/dense``.
    """
    rows = []
    for sort in sorts:
        for jit in (True, False):
            for batch, stages in CROSSOVER_SHAPES:
                for n in CROSSOVER_NS:
                    logits, labels, mask = make_inputs(batch, n, stages, seed=n)
                    fns = {impl: loss_step(sort, impl, labels, mask, jit=jit)
                           for impl in ("dense", "lean")}
                    r = measure_pair(fns, logits, repeats)
                    row = {"sort": sort, "jit": jit, "B": batch, "S": stages, "N": n,
                           "dense_ms": r["dense"]["median_ms"], "lean_ms": r["lean"]["median_ms"]}
                    row["ratio"] = row["lean_ms"] / row["dense_ms"]
                    rows.append(row)
                    print(f"  {sort:6s} {'xla ' if jit else 'tf.function'} B={batch:4d} S={stages} "
                          f"N={n:4d}  dense {row['dense_ms']:8.2f} ms  lean {row['lean_ms']:8.2f} "
                          f"ms  lean/dense {row['ratio']:.2f}", flush=True)
    return rows


def crossover_points(rows: Sequence[dict]) -> dict[str, int | None]:
    """Per (sort, jit, B, S): the smallest measured N from which lean is never slower."""
    out: dict[str, int | None] = {}
    keys = sorted({(r["sort"], r["jit"], r["B"], r["S"]) for r in rows})
    for key in keys:
        series = sorted((r["N"], r["ratio"]) for r in rows
                        if (r["sort"], r["jit"], r["B"], r["S"]) == key)
        point = None
        for i, (n, _) in enumerate(series):
            if all(ratio <= 1.0 for _, ratio in series[i:]):
                point = n
                break
        sort, jit, batch, stages = key
        out[f"{sort} {'xla' if jit else 'graph'} B={batch} S={stages}"] = point
    return out


def calibrate() -> dict:
    """Check the allocator stats see XLA temporaries; measure stream bandwidth and exp rate."""
    x = tf.random.normal([64, 1000])

    @tf.function(jit_compile=True)
    def temp(v: tf.Tensor) -> tf.Tensor:
        big = tf.exp(v[:, :, None] - v[:, None, :])  # a [64, 1000, 1000] f32 temporary
        return tf.reduce_sum(big * tf.reduce_max(big, axis=1, keepdims=True))

    _block(temp(x))
    seen = peak_bytes(temp, x)
    a = np.random.rand(1 << 24).astype(np.float32)
    b = np.empty_like(a)
    best = min(timed_np(lambda: np.copyto(b, a)) for _ in range(5))
    copy_gbs = 2 * a.nbytes / best / 1e9

    e = tf.random.normal([1024 * 40 * 40])

    @tf.function(jit_compile=True)
    def exp_sum(v: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(tf.exp(v))

    _block(exp_sum(e))
    t_exp = min(timed(exp_sum, e) for _ in range(15))

    # The cheapest fused pass over the paper-size [B, N, N] = [1024, 40, 40] pair array
    # under XLA: one subtract, abs and row sum per element, no exp, nothing written back.
    v = tf.random.normal([1024, 40])

    @tf.function(jit_compile=True)
    def one_pass(u: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(tf.abs(u[:, :, None] - u[:, None, :]), axis=-1)

    _block(one_pass(v))
    t_pass = statistics.median(timed(one_pass, v) for _ in range(21))
    return {
        "xla_temp_expected_mb": 64 * 1000 * 1000 * 4 / MIB,
        "xla_temp_seen_mb": seen / MIB,
        "copy_gb_s": copy_gbs,
        "xla_exp_per_s": e.shape[0] / t_exp,
        "xla_pair_pass_ms": 1e3 * t_pass,
    }


def timed_np(fn: Callable) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_cases(cases: Sequence[tuple[int, int, int]], sorts: Sequence[str], repeats: int) -> list:
    rows = []
    dense_bytes_per_elem: dict[str, float] = {}
    for batch, n, stages in cases:
        logits, labels, mask = make_inputs(batch, n, stages)
        elems = batch * n * n
        for sort in sorts:
            row = {"B": batch, "N": n, "S": stages, "sort": sort,
                   "auto": topk.resolve_impl("auto", sort, n)}
            run_dense = elems <= DENSE_MAX_ELEMENTS
            impls = ["dense", "lean"] if run_dense else ["lean"]
            # Every part of the loss is O(B N log N) memory under XLA, so it is always jitted
            # (before the sort-based tie_groups, the label part was O(B N^2) under XLA).
            loss_jit = True
            row["loss_jit"] = loss_jit
            reps = repeats if elems <= DENSE_MAX_ELEMENTS else 1  # ~10-25 s per call
            print(f"  [{batch}x{n}x{stages} {sort}] loss (jit={loss_jit}) ...", flush=True)
            loss = measure_pair(
                {i: loss_step(sort, i, labels, mask, jit=loss_jit) for i in impls}, logits, reps
            )
            print(f"  [{batch}x{n}x{stages} {sort}] up/down ...", flush=True)
            ud = measure_pair({i: up_down_step(sort, i, mask) for i in impls}, logits, reps)
            for impl in impls:
                row[impl] = {"loss": loss[impl], "up_down": ud[impl]}
                for r in (loss[impl], ud[impl]):
                    r.pop("times")
            if run_dense:
                dense_bytes_per_elem[sort] = ud["dense"]["peak"] / (elems * stages)
            else:
                per = dense_bytes_per_elem.get(sort, 16.0)
                row["dense_estimate"] = {
                    "one_matrix_gb": elems * 4 / 1e9,
                    "extrapolated_peak_gb": per * elems * stages / 1e9,
                }
            rows.append(row)
            print("  " + format_row(row), flush=True)
    return rows


def fmt_ms(r: dict) -> str:
    return f"{r['median_ms']:9.1f}"


def format_row(row: dict) -> str:
    head = f"{row['B']:>5} {row['N']:>6} {row['S']:>2} {row['sort']:>6}"
    lean_r = row["lean"]
    if "dense" in row:
        d = row["dense"]
        ratios = (
            f"{lean_r['loss']['median_ms'] / d['loss']['median_ms']:6.3f} "
            f"{lean_r['loss']['peak'] / max(d['loss']['peak'], 1):7.4f} "
            f"{lean_r['up_down']['median_ms'] / d['up_down']['median_ms']:6.3f} "
            f"{lean_r['up_down']['peak'] / max(d['up_down']['peak'], 1):7.4f}"
        )
        dense = (f"{fmt_ms(d['loss'])} {d['loss']['peak'] / MIB:9.1f} "
                 f"{fmt_ms(d['up_down'])} {d['up_down']['peak'] / MIB:9.1f}")
    else:
        est = row["dense_estimate"]
        dense = (f"does not fit: one [B,N,N] f32 = {est['one_matrix_gb']:.1f} GB, "
                 f"peak ~{est['extrapolated_peak_gb']:.0f} GB").ljust(39)
        ratios = "     -       -      -       -"
    lean_s = (f"{fmt_ms(lean_r['loss'])} {lean_r['loss']['peak'] / MIB:9.1f} "
              f"{fmt_ms(lean_r['up_down'])} {lean_r['up_down']['peak'] / MIB:9.1f}")
    jit = "" if row.get("loss_jit", True) else "  (loss without XLA, see notes)"
    return f"{head} | {dense} | {lean_s} | {ratios}{jit}"


TABLE_HEADER = (
    "    B      N  S   sort |   dense: loss ms  peak MiB  up/dn ms  peak MiB |"
    "    lean: loss ms  peak MiB  up/dn ms  peak MiB | lean/dense: loss t  loss mem  "
    "ud t  ud mem"
)


def scaling_check(repeats: int) -> list[dict]:
    """Lean scan parts under XLA at growing N with B * N = 65,536: per-element time."""
    out = []
    for n in (1024, 4096, 16384):
        batch = 65536 // n
        x = tf.constant(np.random.default_rng(2).normal(size=(batch, n)).astype(np.float32))
        count = tf.fill([batch], float(n))
        col = tf.ones([batch, n])

        def soft(v: tf.Tensor, count: tf.Tensor = count, col: tf.Tensor = col) -> tuple:
            with tf.GradientTape() as tape:
                tape.watch(v)
                q, d = lean.soft_sort_up_down(v, 10, tau=1.0, row_limit=count, col_mask=col)
                total = tf.reduce_sum(q * v) + tf.reduce_sum(d)
            return tape.gradient(total, v)

        def bsort(v: tf.Tensor) -> tuple:
            with tf.GradientTape() as tape:
                tape.watch(v)
                total = tf.reduce_sum(lean.sorting.abs_diff_row_sums_sorted(v) * v)
            return tape.gradient(total, v)

        def labels_part(v: tf.Tensor, count: tf.Tensor = count) -> tf.Tensor:
            return labels_ops.label_row_mass(v, 0, count)

        row = {"N": n, "B": batch}
        parts = [("soft_up_down", soft), ("b_sorted", bsort), ("labels", labels_part)]
        for name, fn in parts:
            f = tf.function(fn, jit_compile=True)
            try:
                _block(f(x))
                t = statistics.median(timed(f, x) for _ in range(repeats))
                row[name] = {"ms": 1e3 * t, "ns_per_elem": 1e9 * t / (batch * n),
                             "peak_mb": peak_bytes(f, x) / MIB}
            except Exception as err:  # noqa: BLE001  (report, do not abort the benchmark)
                row[name] = {"error": type(err).__name__}
        out.append(row)
        print("  " + json.dumps(row), flush=True)
    return out


def train_large(
    steps: int, batch: int = 16, n: int = 10000, stages: int = 3, jit: bool = True
) -> dict:
    """A few Adam steps of 3 linear stage scorers on N = 10,000 with the lean NeuralSort path."""
    rng = np.random.default_rng(3)
    dim = 8
    feats = tf.constant(rng.normal(size=(batch, n, dim)).astype(np.float32))
    truth = rng.normal(size=(dim,)).astype(np.float32)
    utility = feats.numpy() @ truth
    ranks = np.argsort(np.argsort(-utility, axis=1), axis=1)
    labels = np.where(ranks < 10, 30.0 - ranks, np.where(ranks < n // 2, 6.0, 5.0))
    labels = tf.constant(labels.astype(np.float32))
    mask = tf.ones([batch, n])
    weights = [tf.Variable(0.1 * rng.normal(size=(dim, 1)).astype(np.float32))
               for _ in range(stages)]
    opt = tf.keras.optimizers.Adam(0.01)
    tau = 1.0  # N = 10,000 needs a smaller tau than the paper's 50 at N = 40 (blur ~ sqrt(tau N))

    @tf.function(jit_compile=jit)
    def step() -> tf.Tensor:
        with tf.GradientTape() as tape:
            logits = [tf.squeeze(feats @ w, -1) for w in weights]
            total = cascade.lcron_loss_terms(logits, labels, mask, tau=tau, impl="lean")["total"]
        opt.apply_gradients(zip(tape.gradient(total, weights), weights))
        return total

    losses, times = [], []
    tf.config.experimental.reset_memory_stats("CPU:0")
    before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    for _ in range(steps):
        start = time.perf_counter()
        losses.append(float(step()))
        times.append(time.perf_counter() - start)
        print(f"  step {len(losses)}: loss {losses[-1]:.4f} ({times[-1]:.1f} s)", flush=True)
    peak = tf.config.experimental.get_memory_info("CPU:0")["peak"] - before
    return {"B": batch, "N": n, "S": stages, "tau": tau, "xla": jit, "losses": losses,
            "step_s": times, "peak_mb": peak / MIB}


def paper_size_profile(repeats: int) -> dict:
    """Where the time goes at B = 1024, N = 40, 2 stages (XLA): loss parts timed alone."""
    logits, labels, mask = make_inputs(1024, 40, 2)
    count = tf.reduce_sum(mask, axis=1)

    def labels_only(x: tf.Tensor) -> tf.Tensor:  # as lcron_loss_terms: one tie_groups
        groups = labels_ops.tie_groups(labels)
        y = labels_ops.label_row_mass(labels, 0, tf.minimum(count, 10.0), groups=groups)
        z = labels_ops.label_row_mass(labels, 10, count, groups=groups)
        return y + z + 0.0 * x

    def b_pairwise(*xs: tf.Tensor) -> tuple:
        with tf.GradientTape() as tape:
            tape.watch(xs)
            total = tf.add_n([tf.reduce_sum(lean.abs_diff_row_sums_fused(x) * x) for x in xs])
        return tape.gradient(total, xs)

    fns = {
        "labels (tie groups + 2 blocks)": tf.function(labels_only, jit_compile=True),
        "b pairwise fwd+bwd x2 stages": tf.function(b_pairwise, jit_compile=True),
        "argsort [1024, 40]": tf.function(
            lambda x: tf.argsort(x, axis=-1, direction="DESCENDING"), jit_compile=True
        ),
    }
    for impl in ("dense", "lean"):
        fns[f"up/down x2 stages, {impl}"] = up_down_step("neural", impl, mask)
    out = {}
    for name, fn in fns.items():
        args = logits if ("up/down" in name or "b pairwise" in name) else logits[:1]
        _block(fn(*args))
        out[name] = 1e3 * statistics.median(timed(fn, *args) for _ in range(repeats))
    return out


# ----------------------------------------------------------------------------- targets


def roofline_ms(calib: dict, batch: int = 1024, n: int = 40, stages: int = 2) -> dict:
    """Roofline of an exact LCRON NeuralSort loss step (see RESULTS.md §4 for the counts).

    Per matrix element and stage: ~30 flops plus 2 exps (P recomputed in the backward pass)
    or 1 exp plus 8 bytes of P traffic (P stored). Compulsory traffic ~6 MB at the paper size
    (scaled with B * N). Non-exp flops at 100 GFLOP/s; exps and bandwidth as calibrated.
    """
    elems = stages * batch * n * n
    flops_s = 30 * elems / 100e9
    base_bytes = 6e6 * (batch * n) / (1024 * 40)
    recompute = 2 * elems / calib["xla_exp_per_s"] + flops_s
    store_compute = elems / calib["xla_exp_per_s"] + flops_s
    store_bytes = (8 * elems + base_bytes) / (calib["copy_gb_s"] * 1e9)
    store = max(store_compute, store_bytes)
    out = {"recompute_ms": 1e3 * recompute, "store_ms": 1e3 * store,
           "roofline_ms": 1e3 * min(recompute, store)}
    if "xla_pair_pass_ms" in calib and (batch, n) == (1024, 40):
        # An exact method makes >= 4 dependent passes over each stage's B*N^2 elements: row
        # normalisers, then column sums (forward); row sums of P*W, then column sums (backward).
        out["pass_floor_ms"] = 4 * stages * calib["xla_pair_pass_ms"]
    return out


def check_targets(results: dict) -> list[str]:
    """One line per target of the issue: MET / MISSED and the measured figure."""
    lines = []
    rows = {(r["B"], r["N"], r["S"], r["sort"]): r for r in results.get("cases", [])}

    def verdict(ok: bool) -> str:
        return "MET   " if ok else "MISSED"

    r = rows.get((64, 1000, 3, "neural"))
    if r and "dense" in r:
        mem = r["dense"]["up_down"]["peak"] / max(r["lean"]["up_down"]["peak"], 1)
        t = r["lean"]["up_down"]["median_ms"] / r["dense"]["up_down"]["median_ms"]
        loss_mem = r["dense"]["loss"]["peak"] / max(r["lean"]["loss"]["peak"], 1)
        lines.append(f"{verdict(mem >= 50 and t <= 1.5)} NeuralSort lean N=1000: up/down peak "
                     f"{mem:.0f}x below dense (>= 50x), time {t:.2f}x dense (<= 1.5x); "
                     f"whole loss {loss_mem:.1f}x below (label part, see RESULTS.md)")
    r = rows.get((64, 1000, 3, "soft"))
    if r and "dense" in r:
        speed = r["dense"]["up_down"]["median_ms"] / r["lean"]["up_down"]["median_ms"]
        loss_speed = r["dense"]["loss"]["median_ms"] / r["lean"]["loss"]["median_ms"]
        lines.append(f"{verdict(speed >= 10)} SoftSort scans N=1000: up/down {speed:.1f}x faster "
                     f"than dense (>= 10x), peak {r['lean']['up_down']['peak'] / MIB:.1f} MiB; "
                     f"whole loss {loss_speed:.1f}x")
    r = rows.get((16, 10000, 3, "neural"))
    train = results.get("train_large")
    if r or train:
        parts, ok = [], True
        if r:
            ok = "lean" in r
            if ok:
                parts.append(f"loss fwd+bwd {r['lean']['loss']['median_ms'] / 1e3:.1f} s, peak "
                             f"{r['lean']['loss']['peak'] / MIB:.0f} MiB")
        if train:
            ok = ok and train["losses"][-1] < train["losses"][0]
            parts.append(f"{len(train['losses'])} Adam steps, loss {train['losses'][0]:.4f} -> "
                         f"{train['losses'][-1]:.4f}, peak {train['peak_mb']:.0f} MiB")
        lines.append(f"{verdict(ok)} NeuralSort lean N=10000 B=16 S=3 trains: " + "; ".join(parts))
    r = rows.get((1024, 40, 2, "neural"))
    if r and "calibration" in results:
        roofs = roofline_ms(results["calibration"])
        roof = roofs["roofline_ms"]
        for impl in ("dense", "lean"):
            if impl in r:
                ms = r[impl]["loss"]["median_ms"]
                lines.append(f"{verdict(ms <= 2 * roof)} N=40 B=1024 S=2 loss ({impl}): "
                             f"{ms:.1f} ms = {ms / roof:.1f}x the roofline {roof:.1f} ms (<= 2x)")
        if "pass_floor_ms" in roofs:
            floor = roofs["pass_floor_ms"]
            lines.append(f"INFO   XLA:CPU pass floor at N=40: 8 passes x "
                         f"{results['calibration']['xla_pair_pass_ms']:.2f} ms = {floor:.1f} ms "
                         f"= {floor / roof:.1f}x the roofline (see RESULTS.md §4)")
    return lines


# ----------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="3 repeats, the N = 10,000 case without the training run")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per impl (default 7)")
    p.add_argument("--sorts", default="neural,soft")
    p.add_argument("--cases", default=None, help="e.g. 1024x40x2,64x1000x3")
    p.add_argument("--train-steps", type=int, default=None,
                   help="Adam steps at N = 10,000 (default 3; 0 with --quick)")
    p.add_argument("--sections", default="crossover,cases,scaling,profile,train",
                   help="comma list of crossover,cases,scaling,profile,train (default all)")
    p.add_argument("--json", default=None, help="write all figures to this file")
    p.add_argument("--report", default=None,
                   help="print the table and target checks of a saved --json file and exit")
    args = p.parse_args(argv)
    if args.report:
        with open(args.report) as fh:
            saved = json.load(fh)
        print(TABLE_HEADER)
        for row in saved.get("cases", []):
            print(format_row(row))
        for line in check_targets(saved):
            print("  " + line)
        return saved
    tf.get_logger().setLevel("ERROR")  # one tf.function per (case, impl): retracing is expected
    repeats = args.repeats or (3 if args.quick else 7)
    train_steps = args.train_steps if args.train_steps is not None else (0 if args.quick else 3)
    cases = CASES
    if args.cases:
        cases = tuple(tuple(int(v) for v in c.split("x")) for c in args.cases.split(","))
    sorts = args.sorts.split(",")

    print(f"# bench_loss  {datetime.date.today()}  TF {tf.__version__}  "
          f"{platform.processor() or platform.machine()}  cpus={os.cpu_count()}  "
          f"loadavg={os.getloadavg()[0]:.1f}  "
          f"command: {' '.join([os.path.basename(sys.executable), *sys.argv])}", flush=True)
    results: dict = {"tf": tf.__version__, "repeats": repeats}
    sections = set(args.sections.split(","))
    print("## calibration", flush=True)
    results["calibration"] = calibrate()
    print("  " + json.dumps(results["calibration"]), flush=True)

    if "crossover" in sections:
        print("## impl crossover: loss fwd+bwd, dense vs lean over N (median ms; "
              f"auto = lean for N > {topk.LEAN_MIN_LIST_SIZE})", flush=True)
        results["crossover"] = crossover(sorts, max(3, repeats // 2))
        results["crossover_points"] = crossover_points(results["crossover"])
        for key, point in results["crossover_points"].items():
            print(f"  lean never slower from N = {point}  ({key})")

    if "cases" in sections:
        print("## loss forward+backward, XLA (times: median ms; memory: peak MiB above inputs)",
              flush=True)
        results["cases"] = run_cases(cases, sorts, repeats)
        print(TABLE_HEADER)
        for row in results["cases"]:
            print(format_row(row))

    if "scaling" in sections:
        print("## XLA scaling of the scan parts (B * N = 65,536; flat ns/elem = linear in N)",
              flush=True)
        results["scaling"] = scaling_check(max(3, repeats // 2))

    if "profile" in sections:
        print("## paper size profile (B=1024, N=40, 2 stages, XLA, median ms)", flush=True)
        results["paper_profile"] = paper_size_profile(repeats)
        for name, ms in results["paper_profile"].items():
            print(f"  {name:32s} {ms:8.2f}")

    if train_steps and "train" in sections:
        print("## training at N = 10,000 (B=16, 3 stages, lean NeuralSort, XLA)",
              flush=True)
        results["train_large"] = train_large(train_steps)
    print("## targets", flush=True)
    results["targets"] = check_targets(results)
    for line in results["targets"]:
        print("  " + line)
    results["loadavg_end"] = os.getloadavg()
    print(f"# done; loadavg (1, 5, 15 min) = {results['loadavg_end']}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    return results


if __name__ == "__main__":
    main()
