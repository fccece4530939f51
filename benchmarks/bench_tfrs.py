"""The TFRS multitask tutorial model + LCRON: XLA modes, and the Adagrad finding.

``--part xla``: training speed of the tutorial model + LCRON (examples/tfrs_multitask.py,
MovieLens-100K cascade requests, batch 256 requests x 50 candidates) in three modes,
alternated round by round in one process:

* ``none``: no XLA;
* ``loss``: ``LcronTask(jit_compile=True)``: the LCRON loss and its metrics compiled on
  their own, the ``StringLookup`` towers and the TFRS tasks in the TF graph;
* ``full``: the lookups moved into tf.data and the whole train step compiled
  (``compile(jit_compile=True)``).

Each round builds a fresh model, runs one warm-up epoch (compilation) and then times
``--epochs`` epochs; the median step time over rounds is reported.

``--part adagrad``: why the dot-product retrieval stage does not learn under the
tutorial's ``Adagrad(0.1)`` with LCRON alone (the tutorial's two tasks off), and what
fixes it. For every variant: the retrieval stage's Recall@10@30 on the test requests and
``lcron_single_retrieval`` per epoch, plus, on the first batch, the scale of the
retrieval scores, the gradient of the loss w.r.t. the embedding tables and the size of
Adagrad's first update relative to the embeddings.

    python benchmarks/bench_tfrs.py --part xla --rounds 3 --epochs 1
    python benchmarks/bench_tfrs.py --part adagrad --epochs 3
    python benchmarks/bench_tfrs.py --part loss --rounds 5   # the LCRON task alone, jit vs not
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import tensorflow as tf  # noqa: E402
import tfrs_multitask as ex  # noqa: E402  (imports lcron_tf first)

from lcron_tf.losses import LcronLoss  # noqa: E402
from lcron_tf.metrics import StageRecall  # noqa: E402


def machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"load {os.getloadavg()[0]:.2f}, TF {tf.__version__}")


class StepTimer(tf.keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def on_train_batch_begin(self, batch, logs=None):
        self._t = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter() - self._t)


def build(data: dict, mode: str, seed: int = 0) -> tuple[ex.MovielensModel, tf.data.Dataset]:
    tf.keras.utils.set_random_seed(seed)
    full = mode == "full"
    model = ex.MovielensModel(
        data["unique_user_ids"], data["unique_movie_titles"], 1.0, 1.0, 1.0,
        jit_loss=mode == "loss", lookups_in_data=full,
    )
    ds = data["lists"].dataset("train", 256, shuffle=True, seed=seed)
    if full:
        ds = ds.map(model.lookup)
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01), jit_compile=full)
    return model, ds


def part_xla(args: argparse.Namespace) -> dict:
    data = ex.load_data(args.data_dir)
    modes = ("none", "loss", "full")
    step_ms: dict[str, list[float]] = {m: [] for m in modes}
    first_epoch_s: dict[str, list[float]] = {m: [] for m in modes}
    for r in range(args.rounds):
        for mode in modes if r % 2 == 0 else modes[::-1]:
            model, ds = build(data, mode, seed=r)
            t0 = time.perf_counter()
            model.fit(ds, epochs=1, verbose=0)  # warm-up: traces and compiles
            first_epoch_s[mode].append(time.perf_counter() - t0)
            timer = StepTimer()
            model.fit(ds, epochs=args.epochs, verbose=0, callbacks=[timer])
            step_ms[mode].append(1000 * statistics.median(timer.times))
            print(f"round {r} {mode:>4}: median step {step_ms[mode][-1]:.1f} ms, first epoch "
                  f"{first_epoch_s[mode][-1]:.1f} s  ({machine()})", flush=True)
    base = statistics.median(step_ms["none"])
    out = {"machine": machine(), "rounds": args.rounds, "modes": {}}
    for mode in modes:
        med = statistics.median(step_ms[mode])
        out["modes"][mode] = {"step_ms": med, "speedup_vs_none": base / med,
                              "first_epoch_s": statistics.median(first_epoch_s[mode]),
                              "all_step_ms": step_ms[mode]}
        print(f"{mode:>4}: step {med:.1f} ms ({base / med:.2f}x vs none), first epoch "
              f"{out['modes'][mode]['first_epoch_s']:.1f} s", flush=True)
    return out


VARIANTS = {
    "adagrad(0.1) [tutorial]": (lambda: tf.keras.optimizers.Adagrad(0.1), 50.0),
    "adagrad(0.1, initial_accumulator_value=1e-6)": (
        lambda: tf.keras.optimizers.Adagrad(0.1, initial_accumulator_value=1e-6), 50.0),
    "adagrad(0.1), tau=1": (lambda: tf.keras.optimizers.Adagrad(0.1), 1.0),
    "adagrad(1.0)": (lambda: tf.keras.optimizers.Adagrad(1.0), 50.0),
    "adam(0.01)": (lambda: tf.keras.optimizers.Adam(0.01), 50.0),
}


def retrieval_recall(model: ex.MovielensModel, requests: dict) -> float:
    metric = StageRecall(k=ex.GT, m=ex.QUOTAS[0], stage=0)
    feats = {"user_id": tf.constant(requests["user_id"].astype(str)),
             "movie_title": tf.constant(requests["movie_title"].astype(str))}
    metric.update_state({"labels": requests["label"], "mask": requests["mask"]},
                        model.stage_scores(feats))
    return float(metric.result())


def first_batch_stats(model: ex.MovielensModel, batch: dict, optimizer_fn) -> dict:
    with tf.GradientTape() as tape:
        loss = model.compute_loss(batch, training=True)
    tables = [model.user_model.layers[-1].embeddings, model.movie_model.layers[-1].embeddings]
    grads = tape.gradient(loss, tables)
    scores = model.stage_scores(batch)[:, 0]
    out = {"retrieval_score_std": float(tf.math.reduce_std(scores)),
           "embedding_abs_mean": float(tf.reduce_mean(tf.abs(tables[0])))}
    for name, g, v in zip(("user", "movie"), grads, tables):
        g = tf.convert_to_tensor(g)
        rows = tf.reduce_any(g != 0, axis=1)
        gr = tf.boolean_mask(g, rows)
        out[f"{name}_grad_abs_mean"] = float(tf.reduce_mean(tf.abs(gr)))
        opt = optimizer_fn()
        var = tf.Variable(v)
        before = var.numpy()
        opt.apply_gradients([(g, var)])
        step = tf.boolean_mask(tf.abs(var - before), rows)
        out[f"{name}_first_update_abs_mean"] = float(tf.reduce_mean(step))
    return out


def part_adagrad(args: argparse.Namespace) -> dict:
    data = ex.load_data(args.data_dir)
    lists = data["lists"]
    out = {"machine": machine(), "epochs": args.epochs, "variants": {}}
    batch = next(iter(lists.dataset("train", 256, shuffle=True, seed=0)))
    for name, (opt_fn, tau) in VARIANTS.items():
        tf.keras.utils.set_random_seed(0)
        model = ex.MovielensModel(
            data["unique_user_ids"], data["unique_movie_titles"], rating_weight=0.0,
            retrieval_weight=0.0, lcron_weight=1.0, jit_loss=True,
            lcron_loss=LcronLoss(gt_num=ex.GT, stage_k=ex.GT, tau=tau),
        )
        stats = first_batch_stats(model, batch, opt_fn)
        before = retrieval_recall(model, lists.test)
        model.compile(optimizer=opt_fn())
        hist = model.fit(lists.dataset("train", 256, shuffle=True, seed=0), epochs=args.epochs,
                         verbose=0).history
        res = {"tau": tau, **stats, "retrieval_recall_before": before,
               "retrieval_recall_after": retrieval_recall(model, lists.test),
               "joint_recall_after": ex.joint_recall(model, lists.test),
               "lcron_single_retrieval": hist["lcron_single_retrieval"],
               "lcron_single_ranking": hist["lcron_single_ranking"]}
        out["variants"][name] = res
        print(name, json.dumps(res), flush=True)
    return out


def part_loss(args: argparse.Namespace) -> dict:
    """The LCRON task alone (loss + metrics, forward + gradient w.r.t. the scores) at the
    example's shapes, LcronTask(jit_compile=True) vs False, alternated call by call."""
    import numpy as np

    from lcron_tf.metrics import JointRecall
    from lcron_tf.models import LcronTask

    data = ex.load_data(args.data_dir)
    batch = next(iter(data["lists"].dataset("train", 256, shuffle=True, seed=0)))
    rng = np.random.default_rng(0)
    scores = [tf.constant(rng.normal(size=batch["label"].shape).astype("float32"))
              for _ in range(2)]
    fns = {}
    for jit in (False, True):
        task = LcronTask(loss=LcronLoss(gt_num=ex.GT, stage_k=ex.GT),
                         metrics=[JointRecall(k=ex.GT, quotas=ex.QUOTAS)],
                         stage_names=("retrieval", "ranking"), jit_compile=jit)

        @tf.function
        def step(s0, s1, task=task):
            with tf.GradientTape() as tape:
                tape.watch([s0, s1])
                loss = task(batch["label"], [s0, s1], batch["mask"])
            return tape.gradient(loss, [s0, s1])

        step(*scores)  # trace / compile
        fns["loss" if jit else "none"] = step
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(args.rounds * 20):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            [g.numpy() for g in fn(*scores)]
            times[name].append(1000 * (time.perf_counter() - t0))
    out = {"machine": machine(), "ms": {k: statistics.median(v) for k, v in times.items()}}
    print("LcronTask forward+backward, B=256, N=50, 2 stages: "
          + ", ".join(f"{k} {v:.2f} ms" for k, v in out["ms"].items()) + f" ({machine()})")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("xla", "adagrad", "loss"), required=True)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args()
    res = {"xla": part_xla, "adagrad": part_adagrad, "loss": part_loss}[args.part](args)
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
