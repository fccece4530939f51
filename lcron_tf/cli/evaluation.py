"""Test metrics of a trained cascade (``lcron-tf evaluate``) and their results table."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lcron_tf._files import read_json, write_atomic, write_json
from lcron_tf.cli.build import load_trained_model, open_data
from lcron_tf.cli.config import Config


def evaluate_model(cfg: Config, model: Any, schema: Any, test: Any,
                   chunk: int = 500, survival_requests: int = 2000) -> tuple[dict, dict]:
    """Test metrics (official definitions) and relaxed survival probabilities.

    ``test``: request arrays, or a finite ``tf.data.Dataset`` of batch dicts (streamed).

    Returns:
      ``(metrics, survival)``: metric name -> float; ``survival`` has ``prob`` float32
      ``[R, N]`` (``CascadeSelection(ks=quotas, tau)``), ``is_gt`` bool and ``mask``.
    """
    from lcron_tf.data.tfrecord import to_dataset
    from lcron_tf.layers import CascadeSelection
    from lcron_tf.metrics import NDCG, JointRecall, StageRecall
    from lcron_tf.ops import ranking, validation

    quotas = tuple(model.quotas)
    gt = cfg.loss.gt_num or schema.gt_num
    metrics = [JointRecall(k=gt, quotas=quotas, name=f"joint_recall_at_{gt}_at_{quotas[-1]}")]
    for s, (name, q) in enumerate(zip(model.stage_names, quotas)):
        metrics.append(StageRecall(k=gt, m=q, stage=s, name=f"{name}_recall_at_{gt}_at_{q}"))
        metrics.append(NDCG(k=min(10, schema.list_size), stage=s, name=f"{name}_ndcg_at_10"))
    select = CascadeSelection(ks=quotas, tau=cfg.loss.tau or 50.0, sort=cfg.loss.sort or "neural",
                              mode=cfg.loss.mode or validation.DEFAULT_MODE)
    probs, gts, masks = [], [], []
    seen = 0
    import tensorflow as tf

    batches = test if isinstance(test, tf.data.Dataset) else to_dataset(
        test, chunk, shuffle=False, drop_remainder=False)
    for batch in batches:
        scores = model(batch, training=False)
        y_true = {"labels": batch["label"], "mask": batch["mask"]}
        for m in metrics:
            m.update_state(y_true, scores)
        if seen < survival_requests:
            probs.append(select(scores, mask=batch["mask"]).numpy())
            msk = batch["mask"].numpy()
            gts.append(ranking.ground_truth_mask(batch["label"], gt, batch["mask"]).numpy() > 0)
            masks.append(msk)
            seen += len(msk)
    out = {m.name: float(m.result()) for m in metrics}
    survival = {"prob": np.concatenate(probs).astype(np.float32), "is_gt": np.concatenate(gts),
                "mask": np.concatenate(masks).astype(np.float32)}
    return out, survival


def results_table(metrics: Mapping[str, float], title: str = "results") -> str:
    """A small markdown table of metric -> value."""
    width = max(len(k) for k in metrics) if metrics else 6
    lines = [f"| {'metric':<{width}} | value  |", f"|{'-' * (width + 2)}|--------|"]
    lines += [f"| {k:<{width}} | {v:.4f} |" for k, v in metrics.items()]
    return f"{title}\n" + "\n".join(lines)


def run_evaluation(cfg: Config) -> dict:
    """Evaluate the run's trained model on the test split -> ``eval.json``, ``survival.npz``."""
    import lcron_tf  # noqa: F401

    data = open_data(cfg)
    model = load_trained_model(cfg, data.schema, data.sample(2))
    test = data.test_dataset(500, drop_remainder=False) if data.streaming else data.test
    metrics, survival = evaluate_model(cfg, model, data.schema, test)
    run_dir = Path(cfg.output.run_dir)
    state = read_json(run_dir / "state.json", {})
    result = {"split": "test", "requests": data.num_test,
              "optimizer_steps": state.get("optimizer_steps"), "metrics": metrics}
    write_json(run_dir / "eval.json", result)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **survival)
    write_atomic(run_dir / "survival.npz", buffer.getvalue())
    return result


__all__ = ["evaluate_model", "results_table", "run_evaluation"]
