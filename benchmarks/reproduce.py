"""Reproduce the LCRON paper's comparison (Tables 2 and 6): LCRON against its seven baselines.

Every method trains the same towers (``CascadeModel.default``: DSSM -> DIN, or DSSM -> MLP ->
DIN) on the same data with the same budget (epochs, batch size, Adam learning rate) and the
same seeds; only the loss differs. Each seed is an independent run (initialisation and
shuffling), as the paper's 5 runs. Reported, on the held-out requests:

* Joint Recall@k@q_T through the hard cascade (k = the schema's gt_num, quotas from the schema),
* per stage Recall@k@q_s over the whole candidate list, and NDCG@10 (official definitions,
  :mod:`lcron_tf.metrics`),

as mean ± std over the seeds, in a markdown table laid out like the paper's Tables 2 / 6
(Joint, then the last stage back to the first), plus a PNG bar chart of Joint Recall.

Usage::

    python benchmarks/reproduce.py --out benchmarks/results            # full: 5 seeds
    python benchmarks/reproduce.py --quick --out /tmp/quick            # ~10 min on 2 cores
    python benchmarks/reproduce.py --datasets sim --stages 2 --seeds 3 --methods lcron,bce

Outputs in ``--out``: ``results.md`` (tables + the exact command, date and machine),
``results.json`` (every run), ``joint_recall.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

import lcron_tf  # noqa: F401  (binds tf.keras to Keras 2 first)
from lcron_tf._keras import keras
from lcron_tf.data import paths
from lcron_tf.data.simulator import simulate
from lcron_tf.data.tfrecord import to_dataset
from lcron_tf.losses import registry
from lcron_tf.metrics import NDCG, JointRecall, StageRecall
from lcron_tf.models.cascade_model import CascadeModel
from lcron_tf.schema import CascadeSchema, split_requests

DATASETS = ("sim", "movielens")
STAGE_LABELS = {2: ("Retrieval", "Ranking"), 3: ("Retrieval", "Pre-ranking", "Ranking")}


@dataclasses.dataclass(frozen=True)
class Budget:
    """Data size and training budget, identical for every method."""

    num_requests: int  # simulator requests (train + test)
    test_fraction: float
    epochs: int
    batch_size: int
    learning_rate: float
    seeds: int
    max_train_requests: int | None = None  # train cap, test capped in proportion (None = all)


FULL = Budget(num_requests=20_000, test_fraction=0.2, epochs=2, batch_size=256,
              learning_rate=0.01, seeds=5)
QUICK = Budget(num_requests=2_000, test_fraction=0.2, epochs=1, batch_size=100,
               learning_rate=0.01, seeds=2, max_train_requests=1_600)


# ---------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------


# MovieLens-100K has the 2-stage RecFlow groups (N = 40, quotas (30, 20)); its 3-stage
# setting keeps the first and last quota and puts the pre-ranker's in between.
MOVIELENS_3STAGE_QUOTAS = (30, 25, 20)


@functools.lru_cache(maxsize=2)
def _movielens(directory: str) -> tuple[CascadeSchema, dict, dict]:
    from lcron_tf.data.movielens import build_movielens

    schema, train = build_movielens(directory, split="train")
    _, test = build_movielens(directory, split="test")
    return schema, train, test


def _subsample(arrays: dict, n: int | None, seed: int) -> dict:
    """A seeded random subset of ``n`` requests (all of them when ``n`` is None or larger)."""
    total = len(arrays["label"])
    if n is None or n >= total:
        return arrays
    index = np.sort(np.random.default_rng(seed).permutation(total)[:n])
    return {k: v[index] for k, v in arrays.items()}


def load_data(
    dataset: str, num_stages: int, budget: Budget, data_dir: str | None, data_seed: int = 0
) -> tuple[CascadeSchema, dict, dict] | str:
    """``(schema, train_arrays, test_arrays)``, or a string saying why the data is skipped.

    ``sim``: :func:`lcron_tf.data.simulate` (RecFlow-shaped, N = 40 / 50), random 80/20
    request split. ``movielens``: :func:`lcron_tf.data.movielens.build_movielens` (temporal
    split), 3-stage quotas :data:`MOVIELENS_3STAGE_QUOTAS`.
    """
    if dataset == "sim":
        schema, arrays = simulate(
            num_requests=budget.num_requests, num_stages=num_stages, seed=data_seed
        )
        train, test = split_requests(arrays, budget.test_fraction, seed=data_seed)
    elif dataset == "movielens":
        directory, origin = paths.candidate_data_dir(data_dir)
        if not (directory / "movielens_100k" / "u.data").exists():
            return f"no MovieLens-100K at {directory / 'movielens_100k'} ({origin})"
        schema, train, test = _movielens(str(directory))
        if num_stages == 3:
            schema = dataclasses.replace(schema, quotas=MOVIELENS_3STAGE_QUOTAS)
    else:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {DATASETS}")
    if len(schema.quotas) != num_stages:
        return f"schema quotas {schema.quotas} do not match {num_stages} stages"
    n = budget.max_train_requests
    if n is not None:
        n_test = max(1, int(n * budget.test_fraction / (1 - budget.test_fraction)))
        train = _subsample(train, n, data_seed)
        test = _subsample(test, n_test, data_seed)
    return schema, train, test


# ---------------------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------------------


def method_loss(method: str, schema: CascadeSchema, **overrides: object) -> object:
    """The loss of ``method`` with its dataset defaults for ``schema`` (gt_num, serving quotas,
    BCE's official sample selection): :func:`lcron_tf.losses.registry.get`."""
    return registry.get(method, schema=schema, **overrides)


def metric_names(num_stages: int) -> list[str]:
    """Result keys, in the paper's column order: joint, then last stage back to the first."""
    names = ["joint"]
    for s in reversed(range(num_stages)):
        names += [f"recall_s{s}", f"ndcg_s{s}"]
    return names


def eval_metrics(schema: CascadeSchema, num_stages: int) -> list[keras.metrics.Metric]:
    gt, quotas = schema.gt_num, schema.quotas
    out: list[keras.metrics.Metric] = [JointRecall(k=gt, quotas=quotas, name="joint")]
    for s in range(num_stages):
        out.append(StageRecall(k=gt, m=quotas[s], stage=s, name=f"recall_s{s}"))
        out.append(NDCG(k=min(10, schema.list_size), stage=s, name=f"ndcg_s{s}"))
    return out


def run_one(
    method: str,
    schema: CascadeSchema,
    train: dict,
    test: dict,
    num_stages: int,
    seed: int,
    budget: Budget,
    jit_compile: bool = True,
) -> dict:
    """Train ``method`` once with ``seed``; return the test metrics and the wall time."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = CascadeModel.default(
        schema, num_stages, loss=method_loss(method, schema), metrics=[],
    )
    model.compile(keras.optimizers.Adam(budget.learning_rate), jit_compile=jit_compile)
    start = time.perf_counter()
    train_ds = to_dataset(train, budget.batch_size, shuffle=True, seed=seed, drop_remainder=True)
    history = model.fit(train_ds, epochs=budget.epochs, verbose=0)
    out = evaluate(model, schema, test, num_stages)
    out["seconds"] = time.perf_counter() - start
    out["final_loss"] = float(history.history["loss"][-1])
    return out


def evaluate(
    model: CascadeModel, schema: CascadeSchema, test: dict, num_stages: int, chunk: int = 1000
) -> dict[str, float]:
    """Test metrics (means over requests), with one eager forward pass per chunk of requests
    (no extra traced test step: at toy budgets tracing, not compute, dominates)."""
    metrics = eval_metrics(schema, num_stages)
    test_ds = to_dataset(test, chunk, shuffle=False, drop_remainder=False)
    for batch in test_ds:
        scores = model(batch, training=False)
        y_true = {"labels": batch["label"], "mask": batch["mask"]}
        for m in metrics:
            m.update_state(y_true, scores)
    return {m.name: float(m.result()) for m in metrics}


# ---------------------------------------------------------------------------------------
# Aggregation and reports
# ---------------------------------------------------------------------------------------


def aggregate(runs: Sequence[dict], keys: Sequence[str]) -> dict[str, tuple[float, float]]:
    """``{key: (mean, std)}`` over runs (population std, ``ddof=0``, 0 for one run)."""
    return {k: (float(np.mean([r[k] for r in runs])), float(np.std([r[k] for r in runs])))
            for k in keys}


def markdown_table(
    title: str, num_stages: int, schema: CascadeSchema, rows: dict[str, dict]
) -> str:
    """One table in the paper's layout; the best mean of each column is in bold."""
    gt, q = schema.gt_num, schema.quotas
    labels = STAGE_LABELS.get(num_stages, tuple(f"Stage {s}" for s in range(num_stages)))
    ndcg_k = min(10, schema.list_size)
    header = [f"Joint R@{gt}@{q[-1]}"]
    for s in reversed(range(num_stages)):
        header += [f"{labels[s]} R@{gt}@{q[s]}", f"{labels[s]} NDCG@{ndcg_k}"]
    keys = metric_names(num_stages)
    best = {k: max(r[k][0] for r in rows.values()) for k in keys}
    lines = [f"### {title}", "", "| Method | " + " | ".join(header) + " |",
             "|---" * (len(header) + 1) + "|"]
    for method, agg in rows.items():
        cells = []
        for k in keys:
            mean, std = agg[k]
            cell = f"{mean:.4f} ± {std:.4f}"
            cells.append(f"**{cell}**" if np.isclose(mean, best[k]) else cell)
        name = registry.DISPLAY_NAMES.get(method, method)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def bar_chart(panels: dict[str, dict[str, dict]], path: Path) -> None:
    """Joint Recall (mean ± std) of every method, one panel per dataset × stage setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(panels))
    cols = min(2, n)
    rows_n = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows_n, cols, figsize=(5.0 * cols, 3.6 * rows_n), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    for ax, (title, rows) in zip(axes.flat, panels.items()):
        methods = list(rows)
        means = [rows[m]["joint"][0] for m in methods]
        stds = [rows[m]["joint"][1] for m in methods]
        colors = ["tab:red" if m == "lcron" else "tab:blue" for m in methods]
        ax.bar(range(len(methods)), means, yerr=stds, color=colors, capsize=3)
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels([registry.DISPLAY_NAMES.get(m, m) for m in methods],
                           rotation=45, ha="right", fontsize=8)
        lo = min(m - s for m, s in zip(means, stds))
        hi = max(m + s for m, s in zip(means, stds))
        pad = max(0.01, 0.15 * (hi - lo))
        ax.set_ylim(max(0.0, lo - pad), min(1.0, hi + pad))
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("Joint Recall")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def machine() -> str:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return (f"{platform.platform()}, Python {platform.python_version()}, TF {tf.__version__}, "
            f"{os.cpu_count()} CPU cores, {'GPU: ' + str(len(gpus)) if gpus else 'no GPU'}")


# ---------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="benchmarks/results", help="output directory")
    p.add_argument("--quick", action="store_true", help="reduced data/epochs/seeds (< 10 min)")
    p.add_argument("--datasets", default="sim,movielens", help="comma list of sim,movielens")
    p.add_argument("--stages", default="2,3", help="comma list of 2,3")
    p.add_argument("--seeds", type=int, default=None, help="runs per method (default 5; quick 2)")
    p.add_argument("--methods", default=",".join(registry.names()), help="comma list of losses")
    p.add_argument("--data-dir", default=None,
                   help="real data directory (default $LCRON_DATA_DIR or ../shared/data)")
    p.add_argument("--num-requests", type=int, default=None, help="simulator requests")
    p.add_argument("--max-train-requests", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--jit", choices=("auto", "on", "off"), default="auto",
                   help="XLA (compile(jit_compile=True)); auto = on, off with --quick, where "
                   "the compile time of 64 small runs would dominate")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark; returns ``{"tables": markdown, "runs": [...], "skipped": {...}}``."""
    args = parse_args(argv)
    budget = QUICK if args.quick else FULL
    overrides = {
        "seeds": args.seeds, "num_requests": args.num_requests, "epochs": args.epochs,
        "batch_size": args.batch_size, "learning_rate": args.learning_rate,
        "max_train_requests": args.max_train_requests,
    }
    budget = dataclasses.replace(budget, **{k: v for k, v in overrides.items() if v is not None})
    methods = _csv(args.methods)
    for m in methods:
        registry.get(m)  # fail fast on an unknown name
    datasets = _csv(args.datasets)
    for d in datasets:
        if d not in DATASETS:
            raise SystemExit(f"unknown dataset {d!r}; choose from {DATASETS}")
    stages = [int(s) for s in _csv(args.stages)]
    jit = args.jit == "on" or (args.jit == "auto" and not args.quick)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python " + " ".join([sys.argv[0] if argv is None else "benchmarks/reproduce.py",
                                    *(sys.argv[1:] if argv is None else argv)])
    started = datetime.datetime.now(datetime.UTC)
    t0 = time.perf_counter()

    runs: list[dict] = []
    skipped: dict[str, str] = {}
    tables: list[str] = []
    panels: dict[str, dict[str, dict]] = {}
    for dataset in datasets:
        for num_stages in stages:
            title = f"{dataset}, {num_stages}-stage"
            data = load_data(dataset, num_stages, budget, args.data_dir)
            if isinstance(data, str):
                skipped[title] = data
                print(f"[skip] {title}: {data}", flush=True)
                continue
            schema, train, test = data
            print(f"[data] {title}: {len(train['label'])} train / {len(test['label'])} test "
                  f"requests, N={schema.list_size}, quotas={schema.quotas}, gt={schema.gt_num}",
                  flush=True)
            keys = metric_names(num_stages)
            rows: dict[str, dict] = {}
            for method in methods:
                method_runs = []
                for seed in range(budget.seeds):
                    r = run_one(method, schema, train, test, num_stages, seed, budget,
                                jit_compile=jit)
                    r.update(dataset=dataset, num_stages=num_stages, method=method, seed=seed)
                    runs.append(r)
                    method_runs.append(r)
                    print(f"  {method:14s} seed {seed}: joint {r['joint']:.4f} "
                          f"({r['seconds']:.1f} s)", flush=True)
                rows[method] = aggregate(method_runs, keys)
            tables.append(markdown_table(title, num_stages, schema, rows))
            panels[title] = rows

    elapsed = time.perf_counter() - t0
    header = [
        "## LCRON vs the baselines: reproduction benchmark",
        "",
        f"- command: `{command}`",
        f"- date (UTC): {started:%Y-%m-%d %H:%M}; wall time {elapsed / 60:.1f} min",
        f"- machine: {machine()}",
        f"- budget: {dataclasses.asdict(budget)}; jit_compile={jit}",
        f"- mean ± std (ddof=0) over seeds 0..{budget.seeds - 1}; best mean per column in bold",
    ]
    header += [
        "- losses: the defaults of `lcron_tf.losses.registry.get` with the schema's gt_num and "
        "quotas: LCRON gt_num = stage_k = 10, tau = 50; ARF / ARF-v2 tau = 200, m = quotas; "
        "ICC sigma = 1e-3, kappa at the quotas (paper form); FS-LambdaLoss mu = 0.75, "
        "topn = q_1; RankFlow ranking-term weight 0 (2 stages) / 1 (3); BCE with the official "
        "sample selection where the schema has RecFlow's stage groups "
        "(stages + 2 groups), else on all candidates",
        f"- MovieLens-100K 3-stage quotas: {MOVIELENS_3STAGE_QUOTAS} (its N = 40)",
    ]
    header += [f"- skipped {k}: {v}" for k, v in skipped.items()]
    text = "\n".join(header) + "\n\n" + "\n".join(tables)
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(json.dumps(
        {"command": command, "budget": dataclasses.asdict(budget), "runs": runs,
         "skipped": skipped}, indent=1))
    if panels:
        bar_chart(panels, out / "joint_recall.png")
    print(text, flush=True)
    return {"tables": text, "runs": runs, "skipped": skipped}


if __name__ == "__main__":
    main()
