"""Reproduce the LCRON paper's comparison, ablations and temperature study, as a resumable grid.

Every method trains the same towers (``CascadeModel.default``: DSSM -> DIN, or DSSM -> MLP ->
DIN, the library's default preset) on the same data with the same budget (request passes,
batch size, Adam learning rate) and the same seeds; only the loss differs. Each seed is an
independent run (initialisation and shuffling), as the paper's runs. Reported, on held-out
test requests: Joint Recall@k@q_T through the hard cascade, per-stage Recall@k@q_s over the
whole candidate list and NDCG@10 (official definitions, :mod:`lcron_tf.metrics`); during
training, the validation Joint Recall at ``eval_points`` points (the learning curves).

**Resumable.** Each run's result is written, as soon as it finishes, to one small JSON file
``<out>/<dataset>-<S>stage/<variant>/seed<k>.json`` (atomically); a rerun skips the runs
already there, so a long grid can be run in parts (or killed and restarted). A run file made
with another budget is never overwritten: the script stops and says so.

**Tables.** After the runs (or with ``--table-only``, from the JSON files alone) it writes
``<out>/results.md``: the paper's layout (Tables 2 / 6: Joint, then the last stage back to the
first) with mean ± std over seeds and a two-sided Welch t-test of LCRON against the best
baseline, the study tables (Tables 3, 4, 7, 8 and the 3-stage temperature), the learning
curves and the Joint Recall chart (PNGs next to it); ``--results-md FILE`` also replaces the
block between ``<!-- reproduce:begin -->`` and ``<!-- reproduce:end -->`` in ``FILE``.

Usage::

    python benchmarks/reproduce.py --grid main,studies            # the converged grid
    python benchmarks/reproduce.py --grid main --datasets movielens --stages 2   # a part
    python benchmarks/reproduce.py --table-only --results-md benchmarks/RESULTS.md
    python benchmarks/reproduce.py --quick --out /tmp/quick       # smoke test, minutes
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime
import functools
import gc
import io
import json
import math
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import lcron_tf  # noqa: F401  (binds tf.keras to Keras 2 first)
from lcron_tf._files import write_atomic, write_json
from lcron_tf._keras import keras
from lcron_tf.data import paths
from lcron_tf.data.simulator import simulate
from lcron_tf.data.tfrecord import to_dataset
from lcron_tf.losses import CascadeRecallLoss, registry
from lcron_tf.metrics import NDCG, JointRecall, StageRecall
from lcron_tf.models.cascade_model import CascadeModel
from lcron_tf.schema import CascadeSchema, split_requests

DATASETS = ("sim", "movielens")
STAGE_LABELS = {2: ("Retrieval", "Ranking"), 3: ("Retrieval", "Pre-ranking", "Ranking")}
DEFAULT_OUT = Path(__file__).resolve().parent / "results"


@dataclasses.dataclass(frozen=True)
class Budget:
    """Data and training budget, identical for every method of a dataset.

    ``train_requests``: simulator requests to train on (MovieLens: a cap on its train split,
    ``None`` = all); ``val_requests``: held-out validation requests (the learning curves; from
    the simulator with another seed, or from MovieLens' train split); ``test_requests``:
    simulator test requests (MovieLens has its own test split); ``eval_points``: validation
    evaluations during training, evenly spaced over the steps.
    """

    train_requests: int | None
    val_requests: int
    test_requests: int
    epochs: int
    batch_size: int
    learning_rate: float
    seeds: int
    eval_points: int

    def request_passes(self, n_train: int) -> int:
        steps = n_train // self.batch_size
        return steps * self.batch_size * self.epochs


# The converged budget (>= 250k request passes per run, the paper's lr and batch; issue 18).
# The simulator makes one pass over 250k fresh requests, as the paper makes one pass over its
# logs; MovieLens-100K has ~17k training requests, so it makes 17 passes over them.
FULL = {
    "sim": Budget(train_requests=250_000, val_requests=4_000, test_requests=20_000, epochs=1,
                  batch_size=1024, learning_rate=0.01, seeds=3, eval_points=10),
    "movielens": Budget(train_requests=None, val_requests=1_500, test_requests=0, epochs=17,
                        batch_size=1024, learning_rate=0.01, seeds=3, eval_points=17),
}
QUICK = Budget(train_requests=1_600, val_requests=200, test_requests=400, epochs=1,
               batch_size=100, learning_rate=0.01, seeds=2, eval_points=2)


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


def _take(arrays: dict, index: np.ndarray) -> dict:
    return {k: v[index] for k, v in arrays.items()}


@functools.lru_cache(maxsize=1)
def load_data(
    dataset: str, num_stages: int, budget: Budget, data_dir: str | None, data_seed: int = 0
) -> tuple[CascadeSchema, dict, dict, dict] | str:
    """``(schema, train, val, test)`` arrays, or a string saying why the data is skipped.

    ``sim``: :func:`lcron_tf.data.simulate` (RecFlow-shaped, N = 40 / 50); train, validation
    and test requests are disjoint draws of one simulated world. ``movielens``:
    :func:`lcron_tf.data.movielens.build_movielens` (temporal split; validation = a seeded
    subset of the train split, removed from training), 3-stage quotas
    :data:`MOVIELENS_3STAGE_QUOTAS`.
    """
    if dataset == "sim":
        n_train = budget.train_requests or 0
        total = n_train + budget.val_requests + budget.test_requests
        schema, arrays = simulate(num_requests=total, num_stages=num_stages, seed=data_seed)
        order = np.random.default_rng(data_seed).permutation(total)
        train = _take(arrays, np.sort(order[:n_train]))
        val = _take(arrays, np.sort(order[n_train:n_train + budget.val_requests]))
        test = _take(arrays, np.sort(order[n_train + budget.val_requests:]))
    elif dataset == "movielens":
        directory, origin = paths.candidate_data_dir(data_dir)
        if not (directory / "movielens_100k" / "u.data").exists():
            return f"no MovieLens-100K at {directory / 'movielens_100k'} ({origin})"
        schema, train_all, test = _movielens(str(directory))
        if num_stages == 3:
            schema = dataclasses.replace(schema, quotas=MOVIELENS_3STAGE_QUOTAS)
        frac = budget.val_requests / len(train_all["label"])
        train, val = split_requests(train_all, min(0.5, frac), seed=data_seed)
        train = _subsample(train, budget.train_requests, data_seed)
        if budget.test_requests:
            test = _subsample(test, budget.test_requests, data_seed)
    else:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {DATASETS}")
    if len(schema.quotas) != num_stages:
        return f"schema quotas {schema.quotas} do not match {num_stages} stages"
    return schema, train, val, test


# ---------------------------------------------------------------------------------------
# The grid
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Variant:
    """One row of a table: a method (``registry`` name) with option overrides, or a study."""

    key: str  # directory name, e.g. "lcron" or "lcron+tau=10"
    method: str  # registry name of the loss family (for display and the Welch test)
    study: str  # "main", "ablation", "weights", "sort", "tau", "tau3"
    label: str  # the row label in its table
    overrides: tuple[tuple[str, Any], ...] = ()
    loss_class: str | None = None  # a class of lcron_tf.losses instead of registry.get

    def make_loss(self, schema: CascadeSchema) -> Any:
        overrides = dict(self.overrides)
        if self.loss_class == "CascadeRecallLoss":
            return CascadeRecallLoss(gt_num=schema.gt_num, stage_k=schema.gt_num, **overrides)
        return registry.get(self.method, schema=schema, **overrides)


def main_variants(methods: Sequence[str]) -> list[Variant]:
    return [Variant(m, m, "main", registry.DISPLAY_NAMES.get(m, m)) for m in methods]


def study_variants(study: str) -> list[Variant]:
    """The paper's studies as variants of LCRON (all on the simulator)."""
    lcron = "lcron"
    if study == "ablation":  # Table 3
        return [Variant("lcron+no_e2e", lcron, study, "LCRON without L_e2e",
                        (("e2e_weight", 0.0),)),
                Variant("lcron+no_single", lcron, study, "LCRON without L_single",
                        loss_class="CascadeRecallLoss")]
    if study == "weights":  # Table 4: L_e2e weight 1, fixed w(L_single) = 0.5 / sigma**2
        return [Variant(f"lcron+w={w:g}", lcron, study, f"fixed w(L_single) = {w:g}",
                        (("learn_weights", False), ("init_sigma", math.sqrt(0.5 / w))))
                for w in (0.1, 1.0, 5.0)]
    if study == "sort":  # Table 7, plus SoftSort at tau = 1 (a diagnostic, not the paper's):
        # SoftSort's logits are score gaps over tau, NeuralSort's are gaps times up to N - 1
        # over tau, so SoftSort at tau = 50 is ~N times softer; tau = 1 ~ 50 / N at N = 40.
        return [Variant("lcron+soft", lcron, study, "LCRON (SoftSort)", (("sort", "soft"),)),
                Variant("lcron+soft+tau=1", lcron, study, "LCRON (SoftSort, tau = 1)",
                        (("sort", "soft"), ("tau", 1.0)))]
    if study in ("tau", "tau3"):  # Table 8 (2 stages) and the 3-stage question
        taus = (1.0, 10.0, 20.0, 100.0, 200.0) if study == "tau" else (10.0, 20.0)
        return [Variant(f"lcron+tau={t:g}", lcron, study, f"tau = {t:g}", (("tau", t),))
                for t in taus]
    raise ValueError(f"unknown study {study!r}")


STUDIES = ("ablation", "weights", "sort", "tau", "tau3")


@dataclasses.dataclass(frozen=True)
class RunSpec:
    dataset: str
    stages: int
    variant: Variant
    seed: int

    def path(self, out: Path) -> Path:
        setting = f"{self.dataset}-{self.stages}stage"
        return out / setting / self.variant.key / f"seed{self.seed}.json"


def build_grid(grids: Sequence[str], methods: Sequence[str], datasets: Sequence[str],
               stages: Sequence[int], seeds: int) -> list[RunSpec]:
    runs = []
    if "main" in grids:
        for d in datasets:
            for s in stages:
                runs += [RunSpec(d, s, v, k) for v in main_variants(methods) for k in range(seeds)]
    if "studies" in grids:
        for study in STUDIES:
            s = 3 if study == "tau3" else 2
            if "sim" in datasets and s in stages:
                runs += [RunSpec("sim", s, v, k) for v in study_variants(study)
                         for k in range(seeds)]
    return runs


# ---------------------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------------------


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


def evaluate(
    model: CascadeModel, schema: CascadeSchema, test: dict, num_stages: int, chunk: int = 1000,
    only_joint: bool = False,
) -> dict[str, float]:
    """Test metrics (means over requests), one forward pass per chunk of requests."""
    metrics = eval_metrics(schema, num_stages)[: 1 if only_joint else None]
    for batch in to_dataset(test, chunk, shuffle=False, drop_remainder=False):
        scores = model(batch, training=False)
        y_true = {"labels": batch["label"], "mask": batch["mask"]}
        for m in metrics:
            m.update_state(y_true, scores)
    return {m.name: float(m.result()) for m in metrics}


def _curve_callback(
    model: CascadeModel, schema: CascadeSchema, val: dict, num_stages: int, every: int,
    batch_size: int, curve: list,
) -> keras.callbacks.Callback:
    class Curve(keras.callbacks.Callback):
        step = 0

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            self.step += 1
            if self.step % every == 0:
                joint = evaluate(model, schema, val, num_stages, only_joint=True)["joint"]
                curve.append([self.step * batch_size, joint])

    return Curve()


def run_one(spec: RunSpec, data: tuple, budget: Budget, jit_compile: bool,
            preset: str | None) -> dict:
    """Train one variant once with its seed; return the JSON record of the run."""
    schema, train, val, test = data
    keras.backend.clear_session()
    keras.utils.set_random_seed(spec.seed)
    loss = spec.variant.make_loss(schema)
    kwargs = {} if preset is None else {"preset": preset}
    model = CascadeModel.default(schema, spec.stages, loss=loss, metrics=[], **kwargs)
    model.compile(keras.optimizers.Adam(budget.learning_rate), jit_compile=jit_compile)
    n_train = len(train["label"])
    steps = (n_train // budget.batch_size) * budget.epochs
    every = max(1, steps // max(1, budget.eval_points))
    curve: list = []
    callback = _curve_callback(model, schema, val, spec.stages, every, budget.batch_size, curve)
    train_ds = to_dataset(train, budget.batch_size, shuffle=True, seed=spec.seed,
                          drop_remainder=True)
    start = time.perf_counter()
    history = model.fit(train_ds, epochs=budget.epochs, verbose=0, callbacks=[callback])
    seconds = time.perf_counter() - start
    metrics = evaluate(model, schema, test, spec.stages)
    import tensorflow as tf

    return {
        "dataset": spec.dataset, "stages": spec.stages, "method": spec.variant.method,
        "variant": spec.variant.key, "study": spec.variant.study, "label": spec.variant.label,
        "seed": spec.seed, "request_passes": budget.request_passes(n_train),
        "joint_recall": metrics["joint"], "metrics": metrics,
        "val_curve": curve, "final_train_loss": float(history.history["loss"][-1]),
        "loss_config": loss.get_config(), "preset": preset or "default",
        "budget": dataclasses.asdict(budget), "jit_compile": jit_compile,
        "train_requests": n_train, "val_requests": len(val["label"]),
        "test_requests": len(test["label"]), "seconds": round(seconds, 1),
        "versions": {"lcron_tf": lcron_tf.__version__, "tensorflow": tf.__version__,
                     "python": platform.python_version()},
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
    }


# ---------------------------------------------------------------------------------------
# Statistics, tables and charts (from the JSON files alone)
# ---------------------------------------------------------------------------------------


def aggregate(runs: Sequence[dict], keys: Sequence[str]) -> dict[str, Any]:
    """``{key: (mean, std)}`` over runs (sample std, ``ddof=1``; ``None`` for one run), plus
    ``"n"``: the number of runs."""
    out: dict = {"n": len(runs)}
    for k in keys:
        values = [r["metrics"][k] if "metrics" in r else r[k] for r in runs]
        std = float(np.std(values, ddof=1)) if len(values) > 1 else None
        out[k] = (float(np.mean(values)), std)
    return out


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b) by its continued fraction (Lentz's method)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - _betainc(b, a, 1.0 - x)
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-14:
            break
    return math.exp(log_front) * h / a


def welch_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided p-value of Welch's t-test for equal means (``None`` with < 2 runs a side)."""
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    if va + vb == 0:
        return 0.0 if np.mean(a) != np.mean(b) else 1.0
    t = (np.mean(a) - np.mean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return _betainc(df / 2.0, 0.5, df / (df + t * t))  # P(|T_df| > |t|)


def markdown_table(
    title: str, num_stages: int, schema: CascadeSchema | None, rows: dict[str, dict],
    labels: dict[str, str] | None = None, gt: int = 10, quotas: Sequence[int] | None = None,
) -> str:
    """One table in the paper's layout; the best mean of each column is in bold."""
    if schema is not None:
        gt, quotas = schema.gt_num, schema.quotas
    stage_names = STAGE_LABELS.get(num_stages, tuple(f"Stage {s}" for s in range(num_stages)))
    header = [f"Joint R@{gt}@{quotas[-1]}"]
    for s in reversed(range(num_stages)):
        header += [f"{stage_names[s]} R@{gt}@{quotas[s]}", f"{stage_names[s]} NDCG@10"]
    keys = metric_names(num_stages)
    best = {k: max(r[k][0] for r in rows.values()) for k in keys}
    lines = [f"### {title}", "", "| Method | Runs | " + " | ".join(header) + " |",
             "|---" * (len(header) + 2) + "|"]
    for key, agg in rows.items():
        cells = [str(agg["n"])]
        for k in keys:
            mean, std = agg[k]
            cell = f"{mean:.4f}" if std is None else f"{mean:.4f} ± {std:.4f}"
            cells.append(f"**{cell}**" if np.isclose(mean, best[k]) else cell)
        name = (labels or {}).get(key) or registry.DISPLAY_NAMES.get(key, key)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def budget_notes(records: Sequence[dict]) -> list[str]:
    """A note per dataset whose runs do not share one budget (the seed count aside: a grid
    run in phases with different ``--seeds`` is still one budget)."""
    budgets: dict[str, set[str]] = {}
    for r in records:
        budget = {k: v for k, v in r["budget"].items() if k != "seeds"}
        budgets.setdefault(r["dataset"], set()).add(json.dumps(budget, sort_keys=True))
    return [f"- note: {len(b)} different budgets among the {d} runs"
            for d, b in sorted(budgets.items()) if len(b) > 1]


def load_records(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("*-*stage/*/seed*.json"))]


def _group(records: Sequence[dict]) -> dict[tuple[str, int], dict[str, list[dict]]]:
    groups: dict[tuple[str, int], dict[str, list[dict]]] = {}
    for r in records:
        groups.setdefault((r["dataset"], r["stages"]), {}).setdefault(r["variant"], []).append(r)
    return groups


def build_report(records: Sequence[dict], methods: Sequence[str] | None = None) -> dict:
    """Tables (markdown), panels for the charts and the statistics, from run records."""
    groups = _group(records)
    tables, panels, stats = [], {}, {}
    main_methods = [m for m in registry.names() if methods is None or m in methods]
    for (dataset, num_stages), by_variant in sorted(groups.items()):
        keys = metric_names(num_stages)
        main = {m: by_variant[m] for m in main_methods if m in by_variant}
        quotas = _setting_quotas(dataset, num_stages)
        if main:
            rows = {m: aggregate(r, keys) for m, r in main.items()}
            title = f"{dataset}, {num_stages}-stage"
            text = markdown_table(title, num_stages, None, rows, quotas=quotas)
            baselines = {m: v for m, v in rows.items() if m != "lcron"}
            if "lcron" in rows and baselines:
                best = max(baselines, key=lambda m: baselines[m]["joint"][0])
                p = welch_p([r["joint_recall"] for r in main["lcron"]],
                            [r["joint_recall"] for r in main[best]])
                diff = rows["lcron"]["joint"][0] - baselines[best]["joint"][0]
                stats[title] = {"best_baseline": best, "diff": diff, "p": p}
                ptxt = "n/a (fewer than 2 runs)" if p is None else f"{p:.3g}"
                text += (f"\nLCRON − best baseline ({registry.DISPLAY_NAMES[best]}) on Joint: "
                         f"{diff:+.4f}; Welch t-test p = {ptxt} "
                         f"({len(main['lcron'])} vs {len(main[best])} runs).\n")
            first = next(iter(main.values()))[0]
            text += (f"\nBudget: {first['request_passes']:,} request passes per run "
                     f"({first['train_requests']:,} training requests × "
                     f"{first['budget']['epochs']} epoch(s), batch {first['budget']['batch_size']},"
                     f" Adam {first['budget']['learning_rate']}), preset {first['preset']}, "
                     f"jit_compile={first['jit_compile']}; {first['test_requests']:,} test "
                     f"requests; seeds {sorted({r['seed'] for v in main.values() for r in v})}.\n")
            tables.append(text)
            panels[title] = {"rows": rows, "curves": {m: [r["val_curve"] for r in v]
                                                      for m, v in main.items()}}
        for study in STUDIES:
            order = [v.key for v in study_variants(study)]  # the paper's order (tau 1 < 10 < ...)
            order += [k for k in by_variant if k not in order]
            variants = {k: by_variant[k] for k in order
                        if k in by_variant and by_variant[k][0]["study"] == study}
            if not variants:
                continue
            rows = {}
            labels = {}
            if "lcron" in by_variant:
                rows["lcron"] = aggregate(by_variant["lcron"], keys)
                labels["lcron"] = "LCRON (learned weights, NeuralSort, tau = 50)"
            for k, v in variants.items():
                rows[k] = aggregate(v, keys)
                labels[k] = v[0]["label"]
            title = f"study: {study} ({dataset}, {num_stages}-stage)"
            tables.append(markdown_table(title, num_stages, None, rows, labels, quotas=quotas))
    return {"tables": "\n".join(tables), "panels": panels, "stats": stats}


def _setting_quotas(dataset: str, num_stages: int) -> tuple[int, ...]:
    if dataset == "movielens" and num_stages == 3:
        return MOVIELENS_3STAGE_QUOTAS
    return (40, 30, 20) if num_stages == 3 else (30, 20)


def _figure(n: int, height: float) -> tuple[Any, Any, Any]:
    """A figure with one panel per setting (2 columns), unused panels hidden."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, n)
    cols = min(2, n)
    rows_n = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows_n, cols, figsize=(5.0 * cols, height * rows_n), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return plt, fig, axes


def _save_png(plt: Any, fig: Any, path: Path) -> None:
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    write_atomic(path, buffer.getvalue())


def bar_chart(panels: dict[str, dict], path: Path) -> None:
    """Joint Recall (mean ± std) of every method, one panel per dataset × stage setting."""
    plt, fig, axes = _figure(len(panels), 3.6)
    for ax, (title, panel) in zip(axes.flat, panels.items()):
        rows = panel["rows"]
        methods = list(rows)
        means = [rows[m]["joint"][0] for m in methods]
        stds = [rows[m]["joint"][1] or 0.0 for m in methods]
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
    _save_png(plt, fig, path)


def curve_chart(panels: dict[str, dict], path: Path) -> None:
    """Validation Joint Recall vs request passes: LCRON and the best baseline (mean ± std)."""
    plt, fig, axes = _figure(len(panels), 3.4)
    for ax, (title, panel) in zip(axes.flat, panels.items()):
        rows = panel["rows"]
        baselines = [m for m in rows if m != "lcron"]
        shown = ["lcron"] + ([max(baselines, key=lambda m: rows[m]["joint"][0])]
                             if baselines else [])
        for m in shown:
            curves = [c for c in panel["curves"].get(m, []) if c]
            if not curves:
                continue
            length = min(len(c) for c in curves)
            x = np.array([p[0] for p in curves[0][:length]])
            y = np.array([[p[1] for p in c[:length]] for c in curves])
            color = "tab:red" if m == "lcron" else "tab:blue"
            ax.plot(x, y.mean(0), color=color, label=registry.DISPLAY_NAMES.get(m, m))
            ax.fill_between(x, y.mean(0) - y.std(0), y.mean(0) + y.std(0), color=color,
                            alpha=0.2)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("request passes")
        ax.set_ylabel("validation Joint Recall")
        ax.legend(fontsize=8)
    _save_png(plt, fig, path)


def machine() -> str:
    import tensorflow as tf

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if "model name" in line)
    except (OSError, StopIteration):
        pass
    gpus = tf.config.list_physical_devices("GPU")
    return (f"{cpu}, {os.cpu_count()} CPU cores, {'GPU: ' + str(len(gpus)) if gpus else 'no GPU'}"
            f", {platform.platform()}")


def machines_line(records: Sequence[dict]) -> str:
    """Each distinct ``machine`` of ``records`` with its run count, most runs first."""
    counts = collections.Counter(r.get("machine", "unknown") for r in records)
    if not counts:
        return "n/a"
    return "; ".join(f"{m} ({n} run{'s' if n != 1 else ''})" for m, n in counts.most_common())


def block_name(out: Path) -> str:
    """The name of the markdown block that the tables of results folder ``out`` go to.

    ``""`` (the unnamed block) for the default folder, else the folder's name (e.g.
    ``long-1m``), so that the tables of several budgets can live in one markdown file.
    """
    return "" if out.resolve() == DEFAULT_OUT.resolve() else out.name


def replace_block(path: Path, text: str, name: str = "") -> None:
    """Replace the generated block ``name`` of ``path`` with ``text``, atomically.

    The unnamed block lies between ``<!-- reproduce:begin -->`` and ``<!-- reproduce:end -->``,
    a named one between ``<!-- reproduce:begin NAME -->`` and ``<!-- reproduce:end NAME -->``.
    Exits with a message when ``path`` has no such block.
    """
    suffix = f" {name}" if name else ""
    begin, end = f"<!-- reproduce:begin{suffix} -->", f"<!-- reproduce:end{suffix} -->"
    content = path.read_text()
    if begin not in content or end not in content:
        raise SystemExit(f"{path} has no {begin} ... {end} block to replace")
    head, rest = content.split(begin, 1)
    _, tail = rest.split(end, 1)
    write_atomic(path, f"{head}{begin}\n{text}\n{end}{tail}")


# ---------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(DEFAULT_OUT), help="results directory (run JSON files)")
    p.add_argument("--grid", default="main", help="comma list of main,studies")
    p.add_argument("--quick", action="store_true", help="toy budget (minutes; for smoke tests)")
    p.add_argument("--datasets", default="sim,movielens", help="comma list of sim,movielens")
    p.add_argument("--stages", default="2,3", help="comma list of 2,3")
    p.add_argument("--seeds", type=int, default=None, help="runs per variant (default 3)")
    p.add_argument("--methods", default=",".join(registry.names()), help="comma list of losses")
    p.add_argument("--data-dir", default=None,
                   help="real data directory (default $LCRON_DATA_DIR or ../shared/data)")
    p.add_argument("--train-requests", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--jit", choices=("on", "off"), default="on",
                   help="compile(jit_compile=...): on is the faster mode of the paper preset on "
                   "CPU too (benchmarks/RESULTS.md B §5 and §7)")
    p.add_argument("--preset", default=None, help="CascadeModel.default preset (default: the "
                   "library's default)")
    p.add_argument("--table-only", action="store_true",
                   help="no training: rebuild the tables and charts from the JSON files")
    p.add_argument("--results-md", default=None,
                   help="also replace the generated block of this markdown file: the unnamed "
                   "block for the default --out, else the block named for the --out folder "
                   "(<!-- reproduce:begin long-1m --> ... <!-- reproduce:end long-1m -->)")
    return p.parse_args(argv)


def _budget(args: argparse.Namespace, dataset: str) -> Budget:
    budget = QUICK if args.quick else FULL[dataset]
    overrides = {"seeds": args.seeds, "train_requests": args.train_requests,
                 "epochs": args.epochs, "batch_size": args.batch_size,
                 "learning_rate": args.learning_rate}
    budget = dataclasses.replace(budget, **{k: v for k, v in overrides.items() if v is not None})
    if budget.epochs != (QUICK if args.quick else FULL[dataset]).epochs:
        budget = dataclasses.replace(budget, eval_points=max(budget.eval_points, 1))
    return budget


def _rss() -> str:
    """``"; RSS x.x GiB"`` of this process (Linux), for the progress line; else ``""``.

    A long grid runs in one process (the data are built once per setting); this shows
    whether its memory grows from run to run."""
    try:
        with open("/proc/self/status") as f:
            kib = next(int(x.split()[1]) for x in f if x.startswith("VmRSS:"))
    except (OSError, StopIteration, ValueError):
        return ""
    return f"; RSS {kib / 2**20:.1f} GiB"


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the grid (skipping finished runs); returns ``{"tables", "runs", "skipped"}``."""
    args = parse_args(argv)
    methods = _csv(args.methods)
    for m in methods:
        registry.loss_class(m)  # fail fast on an unknown name
    datasets = _csv(args.datasets)
    for d in datasets:
        if d not in DATASETS:
            raise SystemExit(f"unknown dataset {d!r}; choose from {DATASETS}")
    stages = [int(s) for s in _csv(args.stages)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jit = args.jit == "on"
    skipped: dict[str, str] = {}
    new_runs: list[dict] = []
    if not args.table_only:
        seeds = args.seeds if args.seeds is not None else (QUICK.seeds if args.quick else 3)
        specs = build_grid(_csv(args.grid), methods, datasets, stages, seeds)
        todo = [s for s in specs if not s.path(out).exists()]
        print(f"[grid] {len(specs)} runs, {len(specs) - len(todo)} done already, "
              f"{len(todo)} to run -> {out}", flush=True)
        t0 = time.perf_counter()
        data: Any = None
        data_key: tuple | None = None
        for i, spec in enumerate(todo):
            budget = _budget(args, spec.dataset)
            key = (spec.dataset, spec.stages, budget)
            if key != data_key:
                # Free the previous setting's arrays before building the next: otherwise both
                # are alive while the new one is built (a 1M-request simulator setting is ~5 GB
                # of arrays plus its tf.data copies; two of them overflowed 24 GB).
                data = None
                load_data.cache_clear()
                gc.collect()
            data = load_data(spec.dataset, spec.stages, budget, args.data_dir)
            data_key = key
            if isinstance(data, str):
                skipped[f"{spec.dataset}, {spec.stages}-stage"] = data
                continue
            record = run_one(spec, data, budget, jit, args.preset)
            gc.collect()  # the run's model, datasets and functions form reference cycles
            path = spec.path(out)
            if path.exists():  # written meanwhile by a parallel process: keep the first one
                continue
            write_json(path, record)
            new_runs.append(record)
            done = time.perf_counter() - t0
            eta = done / (i + 1) * (len(todo) - i - 1)
            print(f"[{i + 1}/{len(todo)}] {spec.dataset} {spec.stages}-stage "
                  f"{spec.variant.key:18s} seed {spec.seed}: joint {record['joint_recall']:.4f} "
                  f"({record['seconds']:.0f} s; ETA {eta / 60:.0f} min{_rss()})", flush=True)
        for k, v in skipped.items():
            print(f"[skip] {k}: {v}", flush=True)
    records = load_records(out)
    report = build_report(records, methods)
    header = [
        f"## LCRON vs the baselines: reproduction grid in `{out.name}/` (generated by "
        "`benchmarks/reproduce.py --table-only`)",
        "",
        f"- {len(records)} runs in `{out.name}/`; machines of the runs: {machines_line(records)}",
        "- mean ± std (ddof=1) over seeds; best mean per column in bold; Welch t-test two-sided",
        "- losses: `lcron_tf.losses.registry.get(name, schema=schema)` (each loss's own dataset "
        "defaults: LCRON gt_num = stage_k = 10, tau = 50; ARF / ARF-v2 tau = 200, m = quotas; "
        "ICC sigma = 1e-3, kappa at the quotas (paper form); FS-LambdaLoss mu = 0.75, topn = "
        "q_1; RankFlow ranking-term weight 0 (2 stages) / 1 (3); BCE with the official sample "
        "selection on RecFlow-shaped stage groups)",
        f"- MovieLens-100K 3-stage quotas: {MOVIELENS_3STAGE_QUOTAS} (its N = 40)",
    ]
    header += budget_notes(records)
    header += [f"- skipped {k}: {v}" for k, v in skipped.items()]
    text = "\n".join(header) + "\n\n" + report["tables"]
    write_atomic(out / "results.md", text)
    write_json(out / "results.json",
               {"runs": new_runs, "skipped": skipped, "stats": report["stats"]})
    if report["panels"]:
        bar_chart(report["panels"], out / "joint_recall.png")
        curve_chart(report["panels"], out / "learning_curves.png")
    if args.results_md:
        replace_block(Path(args.results_md), text, block_name(out))
    print(text, flush=True)
    return {"tables": text, "runs": new_runs, "skipped": skipped, "stats": report["stats"]}


if __name__ == "__main__":
    main()
