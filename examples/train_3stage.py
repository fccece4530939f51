"""Train a 3-stage LCRON cascade (DSSM retrieval -> MLP pre-ranking -> DIN ranking).

The simulator's 3-stage logs have N = 50 candidates per request (groups rerank_pos,
rerank_neg, rank_neg, coarse_neg, prerank_neg); quotas 40 -> 30 -> 20, ground truth = the
10 rerank positives::

    python examples/train_3stage.py            # examples/configs/sim_3stage.yaml
    python examples/train_3stage.py --quick    # toy size

The command-line equivalent: ``lcron-tf train --config examples/configs/sim_3stage.yaml``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_2stage import main  # noqa: E402  (the same steps, another config)

CONFIG = Path(__file__).with_name("configs") / "sim_3stage.yaml"


if __name__ == "__main__":
    main(CONFIG, __doc__)
