"""GPU check and benchmarks of lcron_tf (run by benchmarks/gpu.sh; also runs on CPU).

1. **Parity**: the paper-preset cascade's loss and gradients (every trainable variable) under
   XLA on the device equal the XLA-on-CPU ones, float32 with TF32 matmuls off. Tolerance: loss
   ``|d| <= 1e-5 |L| + 1e-6``; each variable's gradient ``max |d| <= 1e-4 max |g| + 1e-7``
   (float32 reductions in another order on another device). The same for the LCRON loss alone
   at N = 40 and N = 1000 (lean). Under ``mixed_bfloat16`` the loss is reported next to the
   float32 one (informative: bf16 compute differs by design).
2. **Loss**: LCRON forward + backward under XLA on the device: B = 1024, N = 40, S = 2 (auto and
   lean), B = 64, N = 1000, S = 3 (lean), B = 16, N = 10,000, S = 3 (lean).
3. **Training**: requests/s of the paper preset (2 stages, B = 1024, N = 40) at H = 20 and 50:
   XLA off / on, float32 / mixed_bfloat16, ``steps_per_execution`` 1 / 8, input prefetched to
   the device.

A time budget (``--budget-s``, default 420) skips the remaining cases with a note, so the whole
script stays within 8 minutes. Prints RESULTS.md rows at the end; ``--json FILE`` saves all.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto", choices=("auto", "gpu", "cpu"))
    p.add_argument("--quick", action="store_true", help="small sizes (for a CPU smoke run)")
    p.add_argument("--budget-s", type=float, default=420.0)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    t_start = time.perf_counter()

    import tensorflow as tf
    from bench_vs_torch import cpu_model, load, loss_inputs

    import lcron_tf  # noqa: F401
    from lcron_tf._keras import keras
    from lcron_tf.data import simulate
    from lcron_tf.data.device import prefetch_to_device
    from lcron_tf.losses import LcronLoss
    from lcron_tf.models import CascadeModel
    from lcron_tf.ops.cascade import lcron_loss_terms

    gpus = tf.config.list_logical_devices("GPU")
    if args.device == "gpu" and not gpus:
        print("ERROR: --device gpu but TensorFlow sees no GPU", file=sys.stderr)
        return 2
    use_gpu = bool(gpus) and args.device != "cpu"
    device = gpus[0].name if use_gpu else "/CPU:0"
    name = "CPU " + cpu_model()
    if use_gpu:
        details = tf.config.experimental.get_device_details(tf.config.list_physical_devices(
            "GPU")[0])
        name = f"GPU {details.get('device_name', gpus[0].name)}"
    tf.config.experimental.enable_tensor_float_32_execution(False)
    date = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    cmd = " ".join(["python", *sys.argv])
    print(f"# gpu_check  {date} UTC  device {device} ({name})  TF {tf.__version__}  "
          f"load {load()}\n# command: {cmd}", flush=True)
    if not use_gpu:
        print("# NOTE: no GPU in use: this is a CPU run of the same script (device == CPU, "
              "so the parity check compares CPU with CPU).", flush=True)
    res: dict = {"date_utc": date, "device": name, "command": cmd, "rows": [], "skipped": []}
    batch_size = 256 if args.quick else 1024

    def over_budget(what: str) -> bool:
        if time.perf_counter() - t_start > args.budget_s:
            res["skipped"].append(what)
            print(f"  SKIPPED (time budget {args.budget_s:.0f} s): {what}", flush=True)
            return True
        return False

    def timed(fn, reps: int) -> float:
        fn()
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            fn()
            times.append(1e3 * (time.perf_counter() - start))
        return statistics.median(times)

    # ---------------------------------------------------------------- 1. parity
    ok = True
    print("## 1. parity: XLA on the device vs XLA on the CPU (float32, TF32 off)", flush=True)
    schema, arrays = simulate(num_requests=batch_size, history_length=20)
    batch = {k: tf.constant(v[: min(256, batch_size)]) for k, v in arrays.items()}

    def model_grads(on: str, policy: str | None = None) -> tuple:
        keras.utils.set_random_seed(0)
        model = CascadeModel.default(schema, 2, metrics=[], loss=LcronLoss(mode="reference"),
                                     mixed_precision=policy)
        with tf.device("/CPU:0"):
            model(batch)  # variables on the CPU; copied per call below

        @tf.function(jit_compile=True)
        def step(b: dict) -> tuple:
            with tf.GradientTape() as tape:
                loss = model.compute_loss(b, training=True)
            grads = tape.gradient(loss, model.trainable_variables)
            return loss, [tf.convert_to_tensor(g) for g in grads]

        with tf.device(on):
            loss, grads = step(batch)
        return float(loss), [g.numpy() for g in grads]

    cpu_loss, cpu_grads = model_grads("/CPU:0")
    dev_loss, dev_grads = model_grads(device)
    d_loss = abs(dev_loss - cpu_loss)
    worst = max(float(abs(a - b).max()) / (float(abs(a).max()) + 1e-30)
                for a, b in zip(cpu_grads, dev_grads))
    model_ok = d_loss <= 1e-5 * abs(cpu_loss) + 1e-6 and all(
        float(abs(a - b).max()) <= 1e-4 * float(abs(a).max()) + 1e-7
        for a, b in zip(cpu_grads, dev_grads))
    ok &= model_ok
    print(f"  {'OK  ' if model_ok else 'FAIL'} paper preset loss {dev_loss:.6f} vs CPU "
          f"{cpu_loss:.6f} (|d| {d_loss:.1e}); worst gradient max|d|/max|g| {worst:.1e} over "
          f"{len(cpu_grads)} variables", flush=True)
    res["parity_model"] = {"ok": model_ok, "loss_dev": dev_loss, "loss_cpu": cpu_loss,
                           "worst_rel_grad": worst}
    for b, n, s, impl in ((batch_size, 40, 2, "auto"), (16 if args.quick else 64, 1000, 3,
                                                        "lean")):
        logits, labels, mask = loss_inputs(b, n, s)

        @tf.function(jit_compile=True)
        def loss_grad(xs: list, lab: tf.Tensor, msk: tf.Tensor, impl: str = impl) -> tuple:
            with tf.GradientTape() as tape:
                tape.watch(xs)
                total = lcron_loss_terms(xs, lab, msk, mode="reference", impl=impl)["total"]
            return total, tape.gradient(total, xs)

        outs = []
        for on in ("/CPU:0", device):
            with tf.device(on):
                total, grads = loss_grad([tf.constant(x) for x in logits], tf.constant(labels),
                                         tf.constant(mask))
            outs.append((float(total), [g.numpy() for g in grads]))
        (l1, g1), (l2, g2) = outs
        worst = max(float(abs(a - c).max()) / (float(abs(a).max()) + 1e-30)
                    for a, c in zip(g1, g2))
        case_ok = abs(l1 - l2) <= 1e-5 * abs(l1) + 1e-6 and worst <= 1e-4
        ok &= case_ok
        print(f"  {'OK  ' if case_ok else 'FAIL'} LCRON loss B={b} N={n} S={s} {impl}: {l2:.6f} "
              f"vs CPU {l1:.6f}; worst gradient max|d|/max|g| {worst:.1e}", flush=True)
    if use_gpu:
        bf_loss, _ = model_grads(device, "mixed_bfloat16")
        print(f"  info: mixed_bfloat16 towers on the device: loss {bf_loss:.6f} (float32 "
              f"{dev_loss:.6f})", flush=True)
        res["bf16_loss"] = bf_loss

    # ---------------------------------------------------------------- 2. loss
    print("## 2. LCRON loss forward+backward under XLA on the device (median ms)", flush=True)
    cases = [(batch_size, 40, 2, "auto"), (batch_size, 40, 2, "lean"),
             (16 if args.quick else 64, 1000, 3, "lean")]
    if not args.quick:
        cases.append((16, 10_000, 3, "lean"))
    for b, n, s, impl in cases:
        if over_budget(f"loss B={b} N={n} S={s} {impl}"):
            continue
        logits, labels, mask = loss_inputs(b, n, s)
        with tf.device(device):
            xs = [tf.constant(x) for x in logits]
            lab, msk = tf.constant(labels), tf.constant(mask)

            @tf.function(jit_compile=True)
            def run(xs: list = xs, impl: str = impl, lab: tf.Tensor = lab,
                    msk: tf.Tensor = msk) -> tuple:
                with tf.GradientTape() as tape:
                    tape.watch(xs)
                    total = lcron_loss_terms(xs, lab, msk, mode="reference", impl=impl)["total"]
                return total, tape.gradient(total, xs)

            ms = timed(lambda run=run: run()[0].numpy(), 3 if n >= 1000 else 7)
        row = f"| loss fwd+bwd | B={b} N={n} S={s} impl={impl} | {ms:.2f} ms | {name} | {date} |"
        res["rows"].append(row)
        print("  " + row, flush=True)

    # ---------------------------------------------------------------- 3. training
    print("## 3. training throughput, paper preset, 2 stages (requests/s)", flush=True)
    settings = [(False, None, 1), (True, None, 1), (True, None, 8), (True, "mixed_bfloat16", 8)]
    if not use_gpu:
        settings = settings[:2]  # 16-bit compute and multi-step launches are for GPUs
    for h in (20, 50):
        schema, arrays = simulate(num_requests=2 * batch_size, history_length=h)
        with tf.device("/CPU:0"):
            ds = tf.data.Dataset.from_tensor_slices(
                {k: v[: 2 * batch_size] for k, v in arrays.items()}).batch(
                batch_size, drop_remainder=True).cache().repeat()
        ds = prefetch_to_device(ds, device if use_gpu else None)
        for jit, policy, spe in settings:
            label = (f"H={h} xla={'on' if jit else 'off'} {policy or 'float32'} "
                     f"steps_per_execution={spe}")
            if over_budget(f"train {label}"):
                continue
            keras.backend.clear_session()
            keras.utils.set_random_seed(0)
            model = CascadeModel.default(schema, 2, metrics=[], mixed_precision=policy)
            model.compile(keras.optimizers.Adam(1e-3), jit_compile=jit, steps_per_execution=spe)
            model.fit(ds, steps_per_epoch=2 * spe, epochs=1, verbose=0)  # compile
            steps = 4 * spe if args.quick else 8 * spe
            start = time.perf_counter()
            model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
            rate = steps * batch_size / (time.perf_counter() - start)
            row = (f"| train step | B={batch_size} N=40 {label} | {rate:.0f} requests/s | "
                   f"{name} | {date} |")
            res["rows"].append(row)
            print("  " + row, flush=True)

    total = time.perf_counter() - t_start
    print(f"## RESULTS.md rows ({'all parity checks OK' if ok else 'PARITY FAILED'}; "
          f"{total:.0f} s; load {load()})")
    print("| what | case | figure | device | date (UTC) |\n|---|---|---|---|---|")
    for row in res["rows"]:
        print(row)
    if res["skipped"]:
        print(f"(skipped for time: {', '.join(res['skipped'])})")
    res.update(parity_ok=ok, seconds=total)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=float))
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
