"""Train a 2-stage LCRON cascade (DSSM retrieval -> DIN ranking) from Python, config-driven.

The same steps as ``lcron-tf train`` + ``lcron-tf evaluate`` without the checkpointing
machinery, to show the library calls behind the command line::

    python examples/train_2stage.py                     # examples/configs/sim_2stage.yaml
    python examples/train_2stage.py --quick             # toy size, ~1 min on 2 CPU cores
    python examples/train_2stage.py --set loss.name=bce --set train.epochs=1

For resumable runs, TensorBoard logs and plots use the CLI:
``lcron-tf train --config examples/configs/sim_2stage.yaml``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import lcron_tf  # noqa: F401  (binds tf.keras to Keras 2 before anything else)
from lcron_tf._keras import keras
from lcron_tf.cli.build import build_model, load_data
from lcron_tf.cli.config import load_config
from lcron_tf.cli.evaluation import evaluate_model, results_table
from lcron_tf.data.tfrecord import to_dataset

CONFIG = Path(__file__).with_name("configs") / "sim_2stage.yaml"
QUICK = ["data.num_requests=3000", "train.epochs=2", "train.batch_size=200"]


def run(config: Path, overrides: list[str]) -> dict[str, float]:
    """Train the configured cascade and return its test metrics."""
    cfg = load_config(config, overrides)
    schema, train, test = load_data(cfg)  # simulator / MovieLens / TFRecords, per data.source
    print(f"{len(train['label'])} train / {len(test['label'])} test requests, "
          f"N={schema.list_size}, quotas={cfg.model.quotas or schema.quotas}")
    keras.utils.set_random_seed(cfg.train.seed)
    model = build_model(cfg, schema)  # CascadeModel.default(...) with the configured loss
    model.compile(keras.optimizers.Adam(cfg.train.learning_rate),
                  jit_compile=cfg.train.jit_compile)
    ds = to_dataset(train, cfg.train.batch_size, shuffle=True, seed=cfg.train.seed)
    start = time.perf_counter()
    model.fit(ds, epochs=cfg.train.epochs, verbose=2)
    metrics, _ = evaluate_model(cfg, model, schema, test)
    print(results_table(metrics, f"test metrics ({time.perf_counter() - start:.0f} s)"))
    return metrics


def main(default_config: Path = CONFIG, doc: str = __doc__) -> None:
    """Command line of this script and of train_3stage.py (another default config)."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--config", type=Path, default=default_config)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--quick", action="store_true", help="toy size")
    args = p.parse_args()
    run(args.config, (QUICK if args.quick else []) + args.set)


if __name__ == "__main__":
    main()
