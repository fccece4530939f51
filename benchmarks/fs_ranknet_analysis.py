"""Why FS-RankNet does well on the simulator (issue 18): group separability and controlled runs.

Two parts, both on the 2-stage simulator (N = 40: rank_pos, rank_neg, coarse_neg,
prerank_neg), for a few simulator variants (:data:`VARIANTS`, each a set of
``SimulatorConfig`` overrides):

* ``--part auc``: how separable each pair of stage groups is, per request, by the true
  utility and by each logged stage score (``simulate(..., return_truth=True)``). A pair AUC
  is the fraction of (higher group, lower group) item pairs of a request that the score
  orders correctly (ties 1/2), averaged over requests. FS-RankNet's loss is exactly a
  pairwise logistic loss over these group pairs, so this says how learnable its terms are.
* ``--part train``: small controlled training runs (same towers, data, budget and seeds for
  every method; only the loss and the simulator variant differ): Joint Recall@10@20 and the
  per-stage metrics on held-out requests, plus the pair AUCs of each trained model's scores.

Results go to ``--json`` (one record per run, appended as each finishes; a rerun skips the
records already there) and a markdown summary to stdout. Usage::

    python benchmarks/fs_ranknet_analysis.py --part auc --variants random,top,deep
    python benchmarks/fs_ranknet_analysis.py --part train --variants random,top \\
        --methods lcron,fs_ranknet,fs_lambdaloss --seeds 2 --json /tmp/fsr.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

import lcron_tf  # noqa: F401  (binds tf.keras to Keras 2 first)
from lcron_tf._keras import keras
from lcron_tf.data.simulator import SimulatorConfig, simulate
from lcron_tf.data.tfrecord import to_dataset
from lcron_tf.losses import registry
from lcron_tf.models.cascade_model import CascadeModel

GROUPS = ("rank_pos", "rank_neg", "coarse_neg", "prerank_neg")
PAIRS = tuple((a, b) for a in range(4) for b in range(a + 1, 4))  # FS-RankNet's pairs
STAGE_NAMES = ("retrieval", "prerank", "coarse", "rank", "rerank")

# Simulator variants: SimulatorConfig overrides. "random" = the simulator before issue 18,
# "top" = the RecFlow positive group (the default since), "deep" = "top" with RecFlow's
# funnel (Figure 1 of the RecFlow paper: 8000 -> 3000 -> 500 -> 120 -> 10 -> 6) on a
# larger corpus.
VARIANTS: dict[str, dict] = {
    "random": {"positives": "random"},
    "top": {"positives": "top"},
    "deep": {"positives": "top", "num_items": 20_000, "retrieval_size": 8_000,
             "prerank_keep": 3_000, "coarse_keep": 500, "rank_keep": 120, "rerank_keep": 10},
}


def pair_auc(scores: np.ndarray, group: np.ndarray, hi: int, lo: int) -> float:
    """Mean over requests of P(score_i > score_j), i in group ``hi``, j in group ``lo``.

    Args:
      scores: float [R, N]. group: int [R, N] stage-group index per slot (the same layout in
        every request, as the simulator's).
    """
    a = scores[:, group[0] == hi]
    b = scores[:, group[0] == lo]
    diff = a[:, :, None] - b[:, None, :]
    return float(np.mean((diff > 0) + 0.5 * (diff == 0)))


def auc_table(scores: dict[str, np.ndarray], group: np.ndarray) -> dict[str, dict[str, float]]:
    """``{score name: {"rank_pos>rank_neg": auc, ...}}`` for every FS-RankNet pair."""
    return {name: {f"{GROUPS[a]}>{GROUPS[b]}": pair_auc(x, group, a, b) for a, b in PAIRS}
            for name, x in scores.items()}


def make_config(variant: str, num_requests: int, seed: int) -> SimulatorConfig:
    return SimulatorConfig(num_requests=num_requests, num_stages=2, seed=seed,
                           **VARIANTS[variant])


def part_auc(variants: Sequence[str], num_requests: int) -> list[dict]:
    records = []
    for v in variants:
        start = time.perf_counter()
        _, arrays, truth = simulate(make_config(v, num_requests, 0), return_truth=True)
        seconds = time.perf_counter() - start
        scores = {"utility": truth["utility"]}
        for s, name in enumerate(STAGE_NAMES):
            scores[f"logged {name}"] = truth["stage_scores"][..., s]
        pos_label = arrays["label"][:, :10]
        records.append({
            "part": "auc", "variant": v, "num_requests": num_requests,
            "simulate_seconds": round(seconds, 1), "auc": auc_table(scores, arrays["stage_group"]),
            "rank_pos_label_range": [float(pos_label.min()), float(pos_label.max())],
        })
    return records


def train_one(variant: str, method: str, seed: int, data: tuple, epochs: int, batch_size: int,
              learning_rate: float) -> dict:
    """One run of ``method`` on ``data`` (as benchmarks/reproduce.py ``run_one``)."""
    from reproduce import evaluate  # benchmarks/ is on sys.path when run as a script

    schema, train, test = data
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    loss = registry.get(method, schema=schema)
    model = CascadeModel.default(schema, 2, loss=loss, metrics=[])
    model.compile(keras.optimizers.Adam(learning_rate), jit_compile=False)
    ds = to_dataset(train, batch_size, shuffle=True, seed=seed, drop_remainder=True)
    start = time.perf_counter()
    model.fit(ds, epochs=epochs, verbose=0)
    seconds = time.perf_counter() - start
    metrics = evaluate(model, schema, test, 2)
    scores = np.concatenate([model(b, training=False).numpy()
                             for b in to_dataset(test, 1000, shuffle=False,
                                                 drop_remainder=False)])
    model_aucs = auc_table({"retrieval model": scores[:, 0], "ranking model": scores[:, 1]},
                           test["stage_group"])
    return {"part": "train", "variant": variant, "method": method, "seed": seed,
            "train_requests": len(train["label"]), "test_requests": len(test["label"]),
            "epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
            "steps": (len(train["label"]) // batch_size) * epochs, "metrics": metrics,
            "auc": model_aucs, "seconds": round(seconds, 1)}


def part_train(variants: Sequence[str], methods: Sequence[str], seeds: int, n_train: int,
               n_test: int, epochs: int, batch_size: int, learning_rate: float,
               done: set, sink) -> list[dict]:
    records = []
    for v in variants:
        schema, arrays = simulate(make_config(v, n_train + n_test, 0))
        train = {k: x[:n_train] for k, x in arrays.items()}
        test = {k: x[n_train:] for k, x in arrays.items()}
        for seed in range(seeds):
            for m in methods:
                if (v, m, seed) in done:
                    continue
                rec = train_one(v, m, seed, (schema, train, test), epochs, batch_size,
                                learning_rate)
                print(f"[{v}] {m} seed {seed}: joint {rec['metrics']['joint']:.4f} "
                      f"({rec['seconds']} s)", flush=True)
                sink(rec)
                records.append(rec)
    return records


def summary(records: Sequence[dict]) -> str:
    lines = []
    for r in (r for r in records if r["part"] == "auc"):
        lines += [f"\n#### pair AUCs, variant `{r['variant']}` ({r['num_requests']} requests, "
                  f"rank_pos labels {r['rank_pos_label_range']})\n",
                  "| score | " + " | ".join(r["auc"]["utility"]) + " |",
                  "|---" * (1 + len(PAIRS)) + "|"]
        lines += [f"| {name} | " + " | ".join(f"{x:.3f}" for x in row.values()) + " |"
                  for name, row in r["auc"].items()]
    runs = [r for r in records if r["part"] == "train"]
    if runs:
        keys = ("joint", "recall_s1", "ndcg_s1", "recall_s0", "ndcg_s0")
        lines += ["\n#### controlled runs (mean ± std over seeds)\n",
                  "| variant | method | " + " | ".join(keys)
                  + " | ranking model AUC pos>rank_neg | pos>coarse | rank_neg>coarse "
                  "| coarse>prerank |", "|---" * (2 + len(keys) + 4) + "|"]
        for v in dict.fromkeys(r["variant"] for r in runs):
            for m in dict.fromkeys(r["method"] for r in runs):
                sel = [r for r in runs if r["variant"] == v and r["method"] == m]
                if not sel:
                    continue
                cells = [f"{np.mean([r['metrics'][k] for r in sel]):.4f} ± "
                         f"{np.std([r['metrics'][k] for r in sel]):.4f}" for k in keys]
                auc = [np.mean([r["auc"]["ranking model"][p] for r in sel]) for p in
                       ("rank_pos>rank_neg", "rank_pos>coarse_neg", "rank_neg>coarse_neg",
                        "coarse_neg>prerank_neg")]
                lines.append(f"| {v} | {m} | " + " | ".join(cells) + " | "
                             + " | ".join(f"{x:.3f}" for x in auc) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--part", choices=("auc", "train", "summary"), required=True)
    p.add_argument("--variants", default="random,top")
    p.add_argument("--methods", default="lcron,fs_ranknet,fs_lambdaloss")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--num-requests", type=int, default=20_000, help="auc part")
    p.add_argument("--train-requests", type=int, default=20_000)
    p.add_argument("--test-requests", type=int, default=5_000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--learning-rate", type=float, default=0.01)
    p.add_argument("--json", type=Path, default=None, help="JSON-lines file of the records")
    args = p.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        p.error(f"unknown variants {sorted(unknown)}; choose from {sorted(VARIANTS)}")
    old = []
    if args.json is not None and args.json.exists():
        old = [json.loads(line) for line in args.json.read_text().splitlines() if line]

    def sink(rec: dict) -> None:
        if args.json is not None:
            with args.json.open("a") as f:
                f.write(json.dumps(rec) + "\n")

    if args.part == "auc":
        new = part_auc(variants, args.num_requests)
        for rec in new:
            sink(rec)
    elif args.part == "train":
        done = {(r["variant"], r["method"], r["seed"]) for r in old if r["part"] == "train"}
        new = part_train(variants, [m for m in args.methods.split(",") if m], args.seeds,
                         args.train_requests, args.test_requests, args.epochs,
                         args.batch_size, args.learning_rate, done, sink)
    else:
        new = []
    print(summary(old + new))


if __name__ == "__main__":
    main()
