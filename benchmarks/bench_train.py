"""Training throughput of the 2-stage CascadeModel (paper preset), XLA on vs off, and where
the time goes.

One command::

    .venv/bin/python benchmarks/bench_train.py [--quick] [--history 20 50] [--preset paper]

The model is ``CascadeModel.default(schema, 2, preset=...)`` (DSSM -> DIN) on simulated
RecFlow-shaped requests with every official field (N = 40 candidates, gt_num = 10, quotas
30/20, history length H), batch 1024, Adam, the default ``LcronLoss`` (``impl="auto"``:
dense at N = 40), no metrics. For each H it reports requests/s of ``model.fit`` steps (after
a warm-up that includes the compile), XLA off and on alternated round by round so that both
share the machine's load, and a profile of one step (each part in its own ``tf.function``,
XLA off / on alternated): the retrieval and ranking towers' forward + backward, DIN's
attention hidden layer alone, the loss forward + backward on fixed scores, and the whole
``train_step``. ``--steps-per-execution K`` passes ``steps_per_execution`` to ``compile``;
``--mixed-precision`` builds the towers under that policy (meant for GPUs: on CPUs without
bf16/fp16 units it is slower). The load average and the CPU model are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence

import tensorflow as tf

import lcron_tf  # noqa: F401  (binds tf.keras to Keras 2 first)
from lcron_tf._keras import keras
from lcron_tf.data.simulator import simulate
from lcron_tf.models.cascade_model import CascadeModel
from lcron_tf.models.towers import split_attention_logits

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_vs_torch import cpu_model, load  # noqa: E402


def cached_batches(arrays: dict, batch: int, num_batches: int) -> tf.data.Dataset:
    """``num_batches`` fixed batches, cached and repeated forever (prefetched to the GPU
    when one is visible)."""
    from lcron_tf.data.device import prefetch_to_device
    from lcron_tf.data.tfrecord import to_dataset

    ds = to_dataset(arrays, batch, shuffle=False, drop_remainder=True)
    # tf.data autotuning off: with it, deleting the iterator at the end of a fit call slept
    # ~2.5 s (idle) in about half of the calls (TF 2.21), which landed in the timed round of
    # whichever setting ran it. The data is in memory anyway.
    options = tf.data.Options()
    options.autotune.enabled = False
    return prefetch_to_device(ds.take(num_batches).cache().repeat().with_options(options))


def build(schema: object, jit: bool, args: argparse.Namespace, seed: int = 0) -> CascadeModel:
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = CascadeModel.default(schema, 2, metrics=[], preset=args.preset,
                                 mixed_precision=args.mixed_precision)
    model.compile(keras.optimizers.Adam(1e-3), jit_compile=jit,
                  steps_per_execution=args.steps_per_execution)
    return model


def throughput(schema: object, ds: tf.data.Dataset, batch: int, args: argparse.Namespace,
               log) -> dict:
    """requests/s of ``fit`` for jit off/on, alternated ``rounds`` times.

    A round is one ``fit`` call of ``steps`` steps, timed from ``on_train_begin`` to
    ``on_train_end`` (the training loop; not the data-iterator set-up and teardown).
    """

    class LoopTimer(keras.callbacks.Callback):
        def on_train_begin(self, logs: dict | None = None) -> None:
            self.start = time.perf_counter()

        def on_train_end(self, logs: dict | None = None) -> None:
            self.seconds = time.perf_counter() - self.start

    out: dict[str, list[float]] = {"xla_off": [], "xla_on": []}
    compile_s: dict[str, float] = {}
    models = {}
    spe = args.steps_per_execution
    for name, jit in (("xla_off", False), ("xla_on", True)):
        models[name] = build(schema, jit, args)
        start = time.perf_counter()
        models[name].fit(ds, steps_per_epoch=2 * spe, epochs=1, verbose=0)
        compile_s[name] = time.perf_counter() - start
    steps = max(spe, args.steps // spe * spe)
    for r in range(args.rounds):
        for name, model in models.items():
            timer = LoopTimer()
            model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[timer])
            out[name].append(steps * batch / timer.seconds)
        log(f"    round {r + 1}: XLA off {out['xla_off'][-1]:.0f}, on {out['xla_on'][-1]:.0f} "
            f"requests/s (load {load()})")
    res = {name: {"requests_per_s": statistics.median(v), "best": max(v), "all": v,
                  "warmup_s": compile_s[name]}
           for name, v in out.items()}
    res["speedup"] = res["xla_on"]["requests_per_s"] / res["xla_off"]["requests_per_s"]
    res["speedup_best"] = res["xla_on"]["best"] / res["xla_off"]["best"]
    # Another job taking a core halves a round's rate; with few rounds the median can then
    # land on a slowed round of one setting only.
    res["load_interference"] = any(max(v) > 1.3 * min(v) for v in out.values())
    return res


def step_profile(schema: object, ds: tf.data.Dataset, args: argparse.Namespace) -> dict:
    """Median ms of the parts of one step, XLA off / on alternated ``args.rounds`` times."""
    model = build(schema, jit=False, args=args)
    batch = next(iter(ds))
    scores0 = model(batch)  # builds the variables
    dssm, din = model.stage_models

    def dense(grads: list) -> list:  # IndexedSlices (embeddings) -> their values
        return [g.values if isinstance(g, tf.IndexedSlices) else g for g in grads if g is not None]

    def tower(stage):
        def run(b: dict) -> list:
            with tf.GradientTape() as tape:
                total = tf.reduce_sum(tf.cast(stage(b, training=True), tf.float32))
            return dense(tape.gradient(total, stage.trainable_variables))
        return run

    width = len(getattr(din, "layout", None).history) * din.emb_dim if hasattr(
        din, "layout") else din.emb_dim
    rng = tf.random.Generator.from_seed(0)
    hist = rng.normal([scores0.shape[0], schema.history_length, width])
    cand = rng.normal([scores0.shape[0], schema.list_size, width])

    def attention(h: tf.Tensor, c: tf.Tensor) -> list:
        with tf.GradientTape() as tape:
            tape.watch([h, c])
            total = tf.reduce_sum(split_attention_logits(din.attention, h, c))
        return tape.gradient(total, [h, c, *din.attention.trainable_variables])

    def loss_only(scores: tf.Tensor, b: dict) -> tf.Tensor:
        with tf.GradientTape() as tape:
            tape.watch(scores)
            total = model.task.compute(b["label"], scores, b.get("mask"), None)[0]
        return tape.gradient(total, scores)

    parts = {
        "retrieval tower fwd+bwd": (tower(dssm), (batch,)),
        "ranking tower fwd+bwd": (tower(din), (batch,)),
        "  of which DIN attention hidden layer fwd+bwd": (attention, (hist, cand)),
        "LCRON loss fwd+bwd (fixed scores)": (loss_only, (scores0, batch)),
        "train_step (+ Adam)": (lambda b: model.train_step(b), (batch,)),
    }
    fns = {}
    for name, (fn, fargs) in parts.items():
        for jit in (False, True):
            f = tf.function(fn, jit_compile=jit)
            tf.nest.map_structure(lambda t: t.numpy(), f(*fargs))  # trace / compile
            fns[(name, jit)] = (f, fargs)
    times: dict = {key: [] for key in fns}
    for _ in range(args.rounds):
        for key, (f, fargs) in fns.items():
            start = time.perf_counter()
            tf.nest.map_structure(lambda t: t.numpy(), f(*fargs))
            times[key].append(1e3 * (time.perf_counter() - start))
    return {f"{name}, xla={'on' if jit else 'off'}": statistics.median(v)
            for (name, jit), v in times.items()}


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="batch 256, fewer steps and rounds")
    p.add_argument("--history", type=int, nargs="+", default=[20, 50])
    p.add_argument("--preset", default="paper", choices=("paper", "lite"))
    p.add_argument("--steps", type=int, default=None, help="timed fit steps per round")
    p.add_argument("--rounds", type=int, default=None, help="alternations of off/on")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--steps-per-execution", type=int, default=1)
    p.add_argument("--mixed-precision", default=None,
                   choices=("mixed_bfloat16", "mixed_float16"))
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    args.steps = args.steps or (3 if args.quick else 6)
    args.rounds = args.rounds or (2 if args.quick else 3)
    batch = args.batch or (256 if args.quick else 1024)

    def log(msg: str) -> None:
        print(msg, flush=True)

    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    log(f"# bench_train  {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC  {device}  CPU "
        f"{cpu_model()} ({os.cpu_count()} cores)  TF {tf.__version__}  preset={args.preset}  "
        f"batch={batch}  steps_per_execution={args.steps_per_execution}  "
        f"mixed_precision={args.mixed_precision}  load {load()}")
    log(f"# command: {' '.join(sys.argv)}")
    res: dict = {"device": device, "cpu": cpu_model(), "load_start": load(), "by_history": {}}
    for h in args.history:
        schema, arrays = simulate(num_requests=4 * batch, num_stages=2, history_length=h)
        ds = cached_batches(arrays, batch, 4)
        log(f"  H={h}: throughput (requests/s of fit, XLA off/on alternated)")
        t = throughput(schema, ds, batch, args, log)
        out = {"throughput": t}
        for name, label, what in (("xla_off", "XLA off", "trace"),
                                  ("xla_on", "XLA on ", "compile")):
            r = t[name]
            log(f"    {label}: {r['requests_per_s']:7.0f} requests/s median, {r['best']:.0f} "
                f"best; rounds {[round(x) for x in r['all']]} (warm-up incl. {what} "
                f"{r['warmup_s']:.1f} s)")
        log(f"    XLA on / off: {t['speedup']:.2f}x (medians), {t['speedup_best']:.2f}x (best "
            "rounds)")
        if t["load_interference"]:
            log("    NOTE: rounds of one setting differ by > 1.3x: other load on the machine; "
                "compare the best rounds.")
        if not args.no_profile:
            out["profile_ms"] = step_profile(schema, ds, args)
            for name, ms in out["profile_ms"].items():
                log(f"    {name:58s} {ms:8.1f} ms")
        res["by_history"][h] = out
    res["load_end"] = load()
    log(f"# load at the end {res['load_end']}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1, default=float)
    return res


if __name__ == "__main__":
    main()
