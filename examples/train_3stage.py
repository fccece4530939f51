"""Train a 3-stage LCRON cascade (DSSM retrieval -> MLP pre-ranking -> DIN ranking).

The simulator's 3-stage logs have N = 50 candidates per request (groups rerank_pos,
rerank_neg, rank_neg, coarse_neg, prerank_neg); quotas 40 -> 30 -> 20, ground truth = the
10 rerank positives::

    python examples/train_3stage.py            # examples/configs/sim_3stage.yaml
    python examples/train_3stage.py --quick    # toy size

The command-line equivalent: ``lcron-tf train --config examples/configs/sim_3stage.yaml``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_2stage import QUICK, run  # noqa: E402  (the same steps, another config)

CONFIG = Path(__file__).with_name("configs") / "sim_3stage.yaml"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=CONFIG)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--quick", action="store_true", help="toy size")
    args = p.parse_args()
    run(args.config, (QUICK if args.quick else []) + args.set)


if __name__ == "__main__":
    main()
