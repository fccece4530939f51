"""lcron_tf against a PyTorch reference of the same model and loss, in one process.

One command (from the repository root)::

    .venv/bin/python benchmarks/bench_vs_torch.py [--quick] [--threads 2] [--official DIR]

What is timed (every contender alternated round by round, threads pinned equally:
``torch.set_num_threads(T)`` / ``set_num_interop_threads(1)`` and TF intra-op ``T``,
inter-op 1; the load average and the CPU model are recorded):

* ``loss``: LCRON loss forward + backward w.r.t. the stage logits, ONE evaluation, official
  semantics (``mode="reference"``, tau 50, k = gt = 10; 2 stages soft label matrix, 3 stages
  binarised). lcron_tf: ``lcron_tf.ops.lcron_loss_terms`` under ``tf.function(jit_compile=
  True)`` (``impl="auto"`` = dense at N = 40; ``lean`` at N = 1000). Torch:
  ``tests/torch_oracle.lcron_loss_torch`` (eager; the code the parity tests check). Cases:
  B = 1024, N = 40, S = 2 and B = 64, N = 1000, S = 3. Values are compared before timing.
  With ``--official DIR`` (a kwai/LCRON checkout, never vendored) the official loss *as
  shipped* is timed too: its DEBUG print evaluates the loss graph 3 more times per call.
* ``train``: one optimizer step (Adam, forward + LCRON loss + backward + update) of the
  paper preset, 2 stages, B = 1024, N = 40, at H = 20 and H = 50 (simulated RecFlow-shaped
  data with every official field). lcron_tf: ``CascadeModel.default(schema, 2)`` (reference-
  mode loss, no metrics) through Keras' own train function, XLA off and on. Torch:
  ``benchmarks/torch_models.TorchCascade`` (same architecture, sizes, fused tables, split
  DIN attention by lcron_tf's unit loop (``loop``) and with the hidden layer materialised
  (``split``); tested equal to the preset in tests/benchmarks/test_torch_reference.py);
  ``--torch-concat`` adds the official pair-tensor attention. The ratio uses the fastest
  torch variant and the faster lcron_tf mode. Same shapes and work, not the same initial
  weights.

Prints one line per round, medians, ratios (torch ms / lcron_tf ms: > 1 = lcron_tf faster),
the goals of issue 15 as MET / MISSED, and RESULTS.md rows; ``--json FILE`` saves it all. glibc's
malloc runs with its defaults (both frameworks; ``MALLOC_*`` variables in the environment
are recorded); torch's OpenMP threads wait passively (``OMP_WAIT_POLICY=PASSIVE``, 3-5x
faster torch on this shared machine). Tuning malloc (``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TOP_PAD_``) made lcron_tf's loss 3x faster and torch's loop attention 15x slower in
one trial here, so neither side gets it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def setup_threads(threads: int) -> tuple:
    """Import TF and torch with ``threads`` compute threads each (before any op runs).

    torch's OpenMP threads wait passively (``OMP_WAIT_POLICY=PASSIVE`` unless set): on this
    shared machine their default spin-waiting made torch's loss 3-5x slower (measured).
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import tensorflow as tf

    import lcron_tf  # noqa: F401  (binds Keras 2)

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import torch

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    return tf, torch


def alternate(contenders: dict[str, Callable[[], object]], rounds: int, reps: int,
              log: Callable[[str], None]) -> dict[str, dict]:
    """Median ms per call of each contender; rounds alternate the contenders."""
    for fn in contenders.values():  # warm-up (compiles, allocator)
        fn()
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for r in range(rounds):
        row = []
        for name, fn in contenders.items():
            start = time.perf_counter()
            for _ in range(reps):
                fn()
            ms = 1e3 * (time.perf_counter() - start) / reps
            times[name].append(ms)
            row.append(f"{name} {ms:.1f}")
        log(f"    round {r + 1}: " + ", ".join(row) + f"  (load {load()})")
    return {k: {"median_ms": statistics.median(v), "best_ms": min(v), "rounds_ms": v,
                "interference": max(v) > 1.3 * min(v)} for k, v in times.items()}


# ------------------------------------------------------------------------------------ loss


def loss_inputs(b: int, n: int, s: int, seed: int = 0):
    """RecFlow-like labels (10 positives 30 - rank, tied negative groups), 10 % of the
    requests with the last n // 10 slots padded, normal logits."""
    import numpy as np

    rng = np.random.default_rng(seed)
    neg = n - 10
    groups = np.concatenate([np.full(g.size, 7 - i, np.float32)
                             for i, g in enumerate(np.array_split(np.arange(neg), 3))])
    labels = np.tile(np.concatenate([np.arange(29, 19, -1, dtype=np.float32), groups]), (b, 1))
    mask = np.ones((b, n), np.float32)
    mask[: b // 10, n - n // 10 :] = 0
    logits = [rng.normal(size=(b, n)).astype(np.float32) for _ in range(s)]
    return logits, labels, mask


def official_loss_fn(official: Path, torch, logits, labels, mask, s: int) -> Callable:
    """The official LCRON loss as shipped (prints suppressed), forward + backward."""
    sys.path.insert(0, str(official))
    n = labels.shape[1]
    seg = n // (4 if s == 2 else 5)
    cuts = list(range(0, n, seg))

    def split(x):
        return [x[:, c : c + seg] for c in cuts]

    xs = [torch.tensor(x, requires_grad=True) for x in logits]
    lab = torch.tensor(labels)  # the dataset's last items: labels (30 - rank_index, 7, ...)
    msk = torch.tensor(mask)
    if s == 2:
        from deep_components.loss.two_stage import lcron as off

        model = off.LcronLossModel("cpu")
        conf = type("", (), {"prerank_model_name": "joint/prerank_model",
                             "recall_model_name": "joint/recall_model", "gt_num": 10,
                             "global_size": n, "version": "v0"})
        inputs = [*split(msk), *split(lab)]

        def run():
            return off.compute_lcron_metrics(inputs, split(xs[1]), split(xs[0]), "cpu", model, n,
                                             conf, None, tau=50)["total_loss"]
    else:
        from deep_components.loss.three_stage import lcron as off

        off.max_num = n
        off.joint_loss_conf.global_size = n
        model = off.LcronLossModel("cpu")
        inputs = [*split(msk), *split(lab)]

        def run():
            return off.compute_lcron_loss(inputs, split(xs[2]), split(xs[1]), split(xs[0]), "cpu",
                                          model, "v0")["total_loss"]

    def step():
        with contextlib.redirect_stdout(io.StringIO()):
            total = run()
        grads = torch.autograd.grad(total, xs)
        return float(total), grads

    return step


def loss_case(tf, torch, args, log, b: int, n: int, s: int, impl: str) -> dict:
    """One loss case: values compared, then lcron_tf / torch (/ official) alternated."""
    from torch_oracle import lcron_loss_torch

    from lcron_tf.ops.cascade import lcron_loss_terms

    logits, labels, mask = loss_inputs(b, n, s)
    log(f"  loss B={b} N={n} S={s} (lcron_tf impl={impl}, XLA)  load {load()}")
    tl = [tf.constant(x) for x in logits]
    tlab, tmask = tf.constant(labels), tf.constant(mask)

    @tf.function(jit_compile=True)
    def tf_step(xs: list) -> tuple:
        with tf.GradientTape() as tape:
            tape.watch(xs)
            total = lcron_loss_terms(xs, tlab, tmask, gt_num=10, stage_k=10, tau=50.0,
                                     mode="reference", impl=impl)["total"]
        return total, tape.gradient(total, xs)

    xs = [torch.tensor(x, requires_grad=True) for x in logits]
    th_labels, th_mask = torch.tensor(labels), torch.tensor(mask)

    def torch_step() -> tuple:
        total = lcron_loss_torch(xs, th_labels, th_mask, binarize=s == 3)["total"]
        grads = torch.autograd.grad(total, xs)
        return float(total.detach()), grads

    tf_total, tf_grads = tf_step(tl)
    th_total, th_grads = torch_step()
    diff = abs(float(tf_total) - th_total) / max(abs(th_total), 1e-6)
    gdiff = max(float(abs(g1.numpy() - g2.numpy()).max()) for g1, g2 in zip(tf_grads, th_grads))
    log(f"    values: lcron_tf {float(tf_total):.6f}, torch {th_total:.6f} (rel diff "
        f"{diff:.1e}, max grad diff {gdiff:.1e})")
    contenders = {"lcron_tf": lambda: tf_step(tl)[0].numpy(), "torch": torch_step}
    if args.official:
        off = official_loss_fn(Path(args.official), torch, logits, labels, mask, s)
        log(f"    official as shipped: {off()[0]:.6f}")
        contenders["official"] = off
    reps = 1 if n >= 1000 else (3 if args.quick else 5)
    res = alternate(contenders, args.rounds, reps, log)
    row = {"case": f"B={b} N={n} S={s}", "impl": impl, "value_rel_diff": diff,
           "grad_max_diff": gdiff, **res}
    row["torch_over_tf"] = res["torch"]["median_ms"] / res["lcron_tf"]["median_ms"]
    if "official" in res:
        row["official_over_tf"] = res["official"]["median_ms"] / res["lcron_tf"]["median_ms"]
    return row


def bench_loss(tf, torch, args, log) -> list[dict]:
    cases = [(1024, 40, 2, "auto"), (64, 1000, 3, "lean")]
    if args.quick:
        cases = [(256, 40, 2, "auto"), (16, 1000, 3, "lean")]
    return [loss_case(tf, torch, args, log, *case) for case in cases]


# ----------------------------------------------------------------------------------- train


def _torch_step(ref, opt, batch: dict) -> Callable[[], float]:
    def step() -> float:
        opt.zero_grad(set_to_none=True)
        loss = ref.loss(batch)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def bench_train(tf, torch, args, log) -> list[dict]:
    import torch_models as tm

    from lcron_tf._keras import keras
    from lcron_tf.data import simulate
    from lcron_tf.losses import LcronLoss
    from lcron_tf.models import CascadeModel

    batch_size = 256 if args.quick else 1024
    out = []
    for h in args.history:
        schema, arrays = simulate(num_requests=batch_size, history_length=h, seed=0)
        batch = {k: v[:batch_size] for k, v in arrays.items()}
        log(f"  train step B={batch_size} N={schema.list_size} H={h} (paper preset, 2 stages)"
            f"  load {load()}")
        contenders: dict[str, Callable] = {}
        for jit in (False, True):
            keras.backend.clear_session()
            keras.utils.set_random_seed(0)
            model = CascadeModel.default(schema, 2, metrics=[],
                                         loss=LcronLoss(mode="reference"))
            model.compile(keras.optimizers.Adam(1e-3), jit_compile=jit)
            ds = tf.data.Dataset.from_tensors(
                {k: tf.constant(v) for k, v in batch.items()}).repeat()
            it = iter(ds)
            fn = model.make_train_function()
            contenders[f"lcron_tf xla={'on' if jit else 'off'}"] = (
                lambda fn=fn, it=it: float(fn(it)["loss"]))
        tbatch = tm.to_torch(batch)
        modes = ["loop", "split", "concat"] if args.torch_concat else ["loop", "split"]
        for mode in modes:
            torch.manual_seed(0)
            ref = tm.TorchCascade(schema, 2, attention=mode)
            opt = torch.optim.Adam(ref.parameters(), lr=1e-3)
            contenders[f"torch {mode}"] = _torch_step(ref, opt, tbatch)
        res = alternate(contenders, args.rounds, 1 if args.quick else 2, log)
        row = {"case": f"B={batch_size} N={schema.list_size} H={h}", **res}
        best_tf = min(res["lcron_tf xla=off"]["median_ms"], res["lcron_tf xla=on"]["median_ms"])
        torch_best = min(v["median_ms"] for k, v in res.items() if k.startswith("torch"))
        row["torch_best_ms"] = torch_best
        row["torch_over_tf"] = torch_best / best_tf
        row["xla_on_over_off_speed"] = (res["lcron_tf xla=off"]["median_ms"]
                                        / res["lcron_tf xla=on"]["median_ms"])
        out.append(row)
    return out


# ------------------------------------------------------------------------------------ main


def goals(res: dict) -> list[str]:
    lines = []
    for row in res.get("loss", []):
        if row["case"].endswith("N=40 S=2"):
            r = row["torch_over_tf"]
            lines.append(f"{'MET   ' if r >= 5 else 'MISSED'} loss {row['case']}: lcron_tf "
                         f"{row['lcron_tf']['median_ms']:.1f} ms vs torch one evaluation "
                         f"{row['torch']['median_ms']:.1f} ms = {r:.2f}x (goal >= 5x)")
        if "N=1000" in row["case"] and "official_over_tf" in row:
            r = row["official_over_tf"]
            lines.append(f"{'MET   ' if r >= 100 else 'MISSED'} loss {row['case']} lean: "
                         f"{r:.0f}x the official as shipped (goal >= 100x)")
    for row in res.get("train", []):
        r, x = row["torch_over_tf"], row["xla_on_over_off_speed"]
        best_tf = min(row["lcron_tf xla=off"]["median_ms"], row["lcron_tf xla=on"]["median_ms"])
        lines.append(f"{'MET   ' if r >= 2 else 'MISSED'} train {row['case']}: torch best "
                     f"{row['torch_best_ms']:.0f} ms / lcron_tf best "
                     f"{best_tf:.0f} ms = {r:.2f}x (goal >= 2x)")
        lines.append(f"{'MET   ' if x >= 1 else 'MISSED'} train {row['case']}: XLA on/off "
                     f"throughput {x:.2f}x (goal >= 1x)")
    return lines


def run_sections_apart(sections: list[str], argv: list[str], args: argparse.Namespace) -> dict:
    """Each section in its own process (one section's allocations and threads slowed the
    next one's torch side 7x when they shared a process), then the goals of all."""
    import subprocess
    import tempfile

    keep, skip = [], False
    for a in argv:  # argv without --sections / --json
        if skip:
            skip = False
        elif a in ("--sections", "--json"):
            skip = True
        elif not a.startswith(("--sections=", "--json=")):
            keep.append(a)
    res: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for sec in sections:
            out = Path(tmp) / f"{sec}.json"
            subprocess.run([sys.executable, __file__, *keep, "--sections", sec, "--json",
                            str(out)], check=True)
            part = json.loads(out.read_text())
            for key, value in part.items():
                res.setdefault(key, value)
            res[sec] = part.get(sec, [])
    res["command"] = " ".join([Path(sys.executable).name, __file__, *argv])
    res["goals"] = goals(res)
    print("## goals (all sections)", flush=True)
    for line in res["goals"]:
        print(line, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=float))
    return res


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--sections", default="loss,train")
    p.add_argument("--history", type=int, nargs="+", default=[20, 50])
    p.add_argument("--official", default=None,
                   help="a kwai/LCRON checkout: also time the official loss as shipped")
    p.add_argument("--torch-concat", action="store_true",
                   help="also time torch DIN with the official pair-tensor attention")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    sections = args.sections.split(",")
    if len(sections) > 1:
        return run_sections_apart(sections, argv if argv is not None else sys.argv[1:], args)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    sys.path.insert(0, str(ROOT / "tests"))
    tf, torch = setup_threads(args.threads)

    def log(msg: str) -> None:
        print(msg, flush=True)

    res: dict = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "cpu": cpu_model(), "cores": os.cpu_count(), "threads": args.threads,
        "tf": tf.__version__, "torch": torch.__version__, "load_start": load(),
        "env": {k: v for k, v in os.environ.items() if k.startswith(("MALLOC_", "OMP_"))},
    }
    log(f"# bench_vs_torch  {res['date_utc']} UTC  CPU {res['cpu']} ({res['cores']} cores)  "
        f"threads {args.threads} each  TF {res['tf']}  torch {res['torch']}  load {load()}")
    log(f"# command: {res['command']}")
    if "loss" in sections:
        res["loss"] = bench_loss(tf, torch, args, log)
    if "train" in sections:
        res["train"] = bench_train(tf, torch, args, log)
    res["load_end"] = load()
    log(f"# load at the end {res['load_end']}")
    log("## ratios (torch ms / lcron_tf ms)")
    for row in res.get("loss", []):
        extra = (f", official as shipped {row['official']['median_ms']:.1f} ms = "
                 f"{row['official_over_tf']:.1f}x") if "official" in row else ""
        log(f"| loss {row['case']} | lcron_tf {row['lcron_tf']['median_ms']:.1f} ms | torch "
            f"{row['torch']['median_ms']:.1f} ms | {row['torch_over_tf']:.2f}x{extra} |")
    for row in res.get("train", []):
        cells = " | ".join(f"{k} {v['median_ms']:.0f} ms" for k, v in row.items()
                           if isinstance(v, dict))
        log(f"| train {row['case']} | {cells} | torch/lcron_tf {row['torch_over_tf']:.2f}x | "
            f"XLA on/off {row['xla_on_over_off_speed']:.2f}x |")
    res["goals"] = goals(res)
    log("## goals")
    for line in res["goals"]:
        log(line)
    if any(v.get("interference") for sec in ("loss", "train") for row in res.get(sec, [])
           for v in row.values() if isinstance(v, dict)):
        log("NOTE: some contender's rounds differ by > 1.3x: other load on the machine; "
            "compare best rounds or rerun.")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=float))
    return res


if __name__ == "__main__":
    main()
