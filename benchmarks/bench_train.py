"""Training throughput of the paper-size 2-stage CascadeModel, XLA on vs off.

One command::

    .venv/bin/python benchmarks/bench_train.py [--quick]

The model is ``CascadeModel.default(schema, 2)`` (DSSM -> DIN, the paper's towers) on
simulated RecFlow-like requests (N = 40 candidates, gt_num = 10, quotas 30/20), batch
1024, Adam, default ``LcronLoss`` (``impl="auto"``: dense at N = 40). For each setting it
reports requests/s of ``model.fit`` steps (after a warm-up that includes the compile), with
the two settings alternated to share the machine's load, and a profile of one step split
into tower forward+backward and loss forward+backward, each with XLA on and off.

Needs ``lcron_tf.models.CascadeModel`` and ``lcron_tf.data.simulate``; prints a note and
exits 0 when they are not importable.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence

import tensorflow as tf

import lcron_tf  # noqa: F401  (binds tf.keras to Keras 2 first)

BATCH = 1024


def _imports() -> dict | None:
    try:
        from lcron_tf._keras import keras
        from lcron_tf.data.simulator import simulate
        from lcron_tf.models.cascade_model import CascadeModel
    except ImportError as err:  # the model is built by another engineer
        print(f"CascadeModel not importable yet ({err}); throughput measurement pending.")
        return None
    return {"keras": keras, "simulate": simulate, "CascadeModel": CascadeModel}


def cached_batches(arrays: dict, num_batches: int) -> tf.data.Dataset:
    """``num_batches`` fixed batches of ``BATCH`` requests, cached and repeated forever."""
    from lcron_tf.data.tfrecord import to_dataset

    ds = to_dataset(arrays, BATCH, shuffle=False, drop_remainder=True)
    # tf.data autotuning off: with it, deleting the iterator at the end of a fit call slept
    # ~2.5 s (idle) in about half of the calls (TF 2.21, measured; RESULTS.md §5), which
    # landed in the timed round of whichever setting ran it. The data is in memory anyway.
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.take(num_batches).cache().repeat().with_options(options)


def build(mods: dict, schema: object, jit: bool, seed: int = 0) -> object:
    keras = mods["keras"]
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = mods["CascadeModel"].default(schema, 2, metrics=[])
    model.compile(keras.optimizers.Adam(1e-3), jit_compile=jit)
    return model


def throughput(mods: dict, schema: object, ds: tf.data.Dataset, steps: int, rounds: int) -> dict:
    """requests/s of ``fit`` for jit off/on, alternated ``rounds`` times.

    A round is one ``fit`` call of ``steps`` steps, timed from ``on_train_begin`` to
    ``on_train_end`` (the training loop; not the data-iterator set-up and teardown).
    """
    keras = mods["keras"]

    class LoopTimer(keras.callbacks.Callback):
        def on_train_begin(self, logs: dict | None = None) -> None:
            self.start = time.perf_counter()

        def on_train_end(self, logs: dict | None = None) -> None:
            self.seconds = time.perf_counter() - self.start

    out: dict[str, list[float]] = {"xla_off": [], "xla_on": []}
    compile_s: dict[str, float] = {}
    models = {}
    for name, jit in (("xla_off", False), ("xla_on", True)):
        models[name] = build(mods, schema, jit)
        start = time.perf_counter()
        models[name].fit(ds, steps_per_epoch=2, epochs=1, verbose=0)
        compile_s[name] = time.perf_counter() - start
    for _ in range(rounds):
        for name, model in models.items():
            timer = LoopTimer()
            model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[timer])
            out[name].append(steps * BATCH / timer.seconds)
    res = {name: {"requests_per_s": statistics.median(v), "best": max(v), "all": v,
                  "warmup_s": compile_s[name]}
           for name, v in out.items()}
    res["speedup"] = res["xla_on"]["requests_per_s"] / res["xla_off"]["requests_per_s"]
    res["speedup_best"] = res["xla_on"]["best"] / res["xla_off"]["best"]
    # Another job taking a core halves a round's rate; with few rounds the median can then
    # land on a slowed round of one setting only (this happened: RESULTS.md §5).
    res["load_interference"] = any(max(v) > 1.3 * min(v) for v in out.values())
    return res


def step_profile(mods: dict, schema: object, ds: tf.data.Dataset, repeats: int) -> dict:
    """Median ms of tower fwd+bwd, loss fwd+bwd and the whole step, XLA on and off."""
    model = build(mods, schema, jit=False)
    batch = next(iter(ds))
    model(batch)  # build the variables
    scores0 = model(batch)
    variables = model.trainable_variables

    def dense_grads(grads: list) -> list:  # IndexedSlices (embeddings) -> their values
        return [g.values if isinstance(g, tf.IndexedSlices) else g for g in grads if g is not None]

    def towers(b: dict) -> list:
        with tf.GradientTape() as tape:
            total = tf.reduce_sum(model(b, training=True))
        return dense_grads(tape.gradient(total, variables))

    def loss_only(scores: tf.Tensor, b: dict) -> tf.Tensor:
        with tf.GradientTape() as tape:
            tape.watch(scores)
            total = model.task.compute(b["label"], scores, b.get("mask"), None)[0]
        return tape.gradient(total, scores)

    def whole(b: dict) -> list:
        with tf.GradientTape() as tape:
            total = model.compute_loss(b, training=True)
        return dense_grads(tape.gradient(total, variables))

    def train_step(b: dict) -> dict:
        return model.train_step(b)

    out = {}
    for jit in (False, True):
        for name, fn, args in (
            ("towers fwd+bwd", towers, (batch,)),
            ("loss fwd+bwd", loss_only, (scores0, batch)),
            ("forward+loss+backward", whole, (batch,)),
            ("train_step (+ Adam, metrics)", train_step, (batch,)),
        ):
            f = tf.function(fn, jit_compile=jit)
            try:
                tf.nest.map_structure(lambda t: t.numpy(), f(*args))
                times = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    tf.nest.map_structure(lambda t: t.numpy(), f(*args))
                    times.append(time.perf_counter() - start)
                out[f"{name}, xla={'on' if jit else 'off'}"] = 1e3 * statistics.median(times)
            except Exception as err:  # noqa: BLE001  (report, keep going)
                msg = f"failed: {type(err).__name__}: {err}"
                out[f"{name}, xla={'on' if jit else 'off'}"] = msg[:300]
    return out


def main(argv: Sequence[str] | None = None) -> dict | None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer steps and rounds")
    p.add_argument("--steps", type=int, default=None, help="timed fit steps per round")
    p.add_argument("--rounds", type=int, default=None, help="alternations of off/on")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    mods = _imports()
    if mods is None:
        return None
    steps = args.steps or (5 if args.quick else 10)
    rounds = args.rounds or (2 if args.quick else 5)
    schema, arrays = mods["simulate"](num_requests=4 * BATCH, num_stages=2)
    print(f"# bench_train  TF {tf.__version__}  list_size={schema.list_size}  batch={BATCH}  "
          f"command: {' '.join(sys.argv)}", flush=True)
    ds = cached_batches(arrays, 4)
    res = {"throughput": throughput(mods, schema, ds, steps, rounds)}
    t = res["throughput"]
    for name, label, what in (("xla_off", "XLA off", "trace"), ("xla_on", "XLA on ", "compile")):
        r = t[name]
        print(f"  {label}: {r['requests_per_s']:9.0f} requests/s median, {r['best']:.0f} best; "
              f"rounds {[round(x) for x in r['all']]} (warm-up incl. {what} {r['warmup_s']:.1f} s)")
    print(f"  speedup XLA on / off: {t['speedup']:.2f}x (medians), {t['speedup_best']:.2f}x (best "
          "rounds)", flush=True)
    if t["load_interference"]:
        print("  NOTE: rounds of one setting differ by > 1.3x: other load on the machine; "
              "compare the best rounds.")
    res["profile_ms"] = step_profile(mods, schema, ds, 7 if not args.quick else 3)
    for name, ms in res["profile_ms"].items():
        print(f"  {name:34s} {ms if isinstance(ms, str) else f'{ms:8.1f} ms'}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1, default=float)
    return res


if __name__ == "__main__":
    main()
