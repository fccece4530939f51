"""``lcron-tf report``: PNG plots and a markdown summary from a run directory's files.

Reads ``history.json`` (per-epoch Keras logs), ``state.json``, ``eval.json`` and
``survival.npz`` (written by ``lcron-tf evaluate``) and writes, with matplotlib's Agg
backend (no display needed):

* ``training_curves.png``: total loss, LCRON's ``L_e2e`` and ``L_single`` per stage, and the
  learned ``sigma`` per stage, by epoch (train, and validation where logged);
* ``recall_by_epoch.png``: JointRecall and every stage's Recall by epoch;
* ``survival_hist.png``: distribution of the relaxed survival probabilities
  (``CascadeSelection``) of ground-truth vs other candidates on test requests;
* ``report.md``: config summary, step counts, the final metrics and the three images.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lcron_tf._files import write_atomic


def _plt() -> Any:
    from lcron_tf._extras import require

    matplotlib = require("matplotlib", "lcron-tf report (PNG plots)")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    """Save atomically (temp file + rename) and close the figure."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    _plt().close(fig)
    write_atomic(path, buffer.getvalue())
    return path


def _series(history: Sequence[Mapping[str, float]], key: str) -> tuple[list[int], list[float]]:
    xs = [int(h["epoch"]) for h in history if key in h]
    return xs, [float(h[key]) for h in history if key in h]


def _plot_keys(ax: Any, history: Sequence[Mapping[str, float]], keys: Sequence[str],
               title: str) -> None:
    for key in keys:
        for prefix, style in (("", "-o"), ("val_", "--s")):
            xs, ys = _series(history, prefix + key)
            if xs:
                ax.plot(xs, ys, style, label=prefix + key, markersize=4)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(_plt().MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)


def training_curves(history: Sequence[Mapping[str, float]], path: Path) -> Path:
    """Loss, LCRON loss terms and sigma by epoch."""
    keys = sorted({k for h in history for k in h})
    single = [k for k in keys if k.startswith("lcron_single_")]
    sigma = [k for k in keys if k.startswith("lcron_sigma_")]
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    _plot_keys(axes[0], history, ["loss"], "total loss")
    _plot_keys(axes[1], history, ["lcron_e2e", *single], "LCRON terms: L_e2e, L_single")
    _plot_keys(axes[2], history, sigma, "learned sigma per stage")
    fig.tight_layout()
    return _save(fig, path)


def recall_curves(history: Sequence[Mapping[str, float]], path: Path) -> Path:
    """JointRecall and per-stage Recall by epoch."""
    keys = sorted({k for h in history for k in h if not k.startswith("val_")})
    joint = [k for k in keys if k.startswith("joint_recall")]
    stage = [k for k in keys if "_recall_at_" in k and not k.startswith("joint_recall")]
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    _plot_keys(axes[0], history, joint, "JointRecall (train -, validation --)")
    _plot_keys(axes[1], history, stage, "per-stage Recall (train -, validation --)")
    fig.tight_layout()
    return _save(fig, path)


def survival_histogram(prob: np.ndarray, is_gt: np.ndarray, mask: np.ndarray,
                       path: Path) -> Path:
    """Histogram of relaxed survival probabilities: ground truth vs other candidates."""
    valid = mask > 0
    gt, other = prob[valid & is_gt], prob[valid & ~is_gt]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    bins = np.linspace(0.0, max(1.0, float(prob.max()) if prob.size else 1.0), 41)
    ax.hist(other, bins=bins, alpha=0.6, density=True, label=f"other (n={other.size})")
    ax.hist(gt, bins=bins, alpha=0.6, density=True, label=f"ground truth (n={gt.size})")
    ax.set_xlabel("relaxed survival probability (CascadeSelection)")
    ax.set_ylabel("density")
    ax.set_title("Relaxed cascade survival: ground truth vs others", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _md_table(rows: Mapping[str, Any]) -> list[str]:
    lines = ["| metric | value |", "|---|---|"]
    for k, v in rows.items():
        lines.append(f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |")
    return lines


def write_report(run_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write the three PNGs and ``report.md`` for ``run_dir`` into ``out_dir``.

    Returns:
      The written files.

    Raises:
      FileNotFoundError: ``history.json`` (or ``survival.npz``) is missing.
    """
    run_dir, out = Path(run_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hist_path = run_dir / "history.json"
    if not hist_path.is_file():
        raise FileNotFoundError(f"{hist_path} is missing: run `lcron-tf train` first")
    history = json.loads(hist_path.read_text())
    state = _load(run_dir / "state.json")
    evaluation = _load(run_dir / "eval.json")
    files = [training_curves(history, out / "training_curves.png"),
             recall_curves(history, out / "recall_by_epoch.png")]
    surv_path = run_dir / "survival.npz"
    surv_stats: dict[str, Any] = {}
    if surv_path.is_file():
        with np.load(surv_path) as s:
            prob, is_gt, mask = s["prob"], s["is_gt"].astype(bool), s["mask"]
        files.append(survival_histogram(prob, is_gt, mask, out / "survival_hist.png"))
        valid = mask > 0
        surv_stats = {"mean survival, ground truth": float(prob[valid & is_gt].mean()),
                      "mean survival, others": float(prob[valid & ~is_gt].mean())}
    config_text = (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").is_file() \
        else "(no config.yaml)"
    md = [f"# LCRON run report: `{run_dir}`", "",
          f"- status: {state.get('status', '?')}; optimizer steps: "
          f"{state.get('optimizer_steps', '?')} (planned {state.get('planned_steps', '?')}); "
          f"resumed from steps: {state.get('resumes') or 'never'}",
          f"- epochs logged: {len(history)}", ""]
    if evaluation:
        md += [f"## Test metrics ({evaluation.get('requests', '?')} requests)", ""]
        md += _md_table({**evaluation.get("metrics", {}), **surv_stats}) + [""]
    if history:
        md += ["## Last epoch (training logs)", ""]
        md += _md_table({k: v for k, v in history[-1].items() if k != "epoch"}) + [""]
    md += ["## Plots", ""] + [f"![{f.stem}]({f.name})" for f in files] + [""]
    md += ["## Config", "", "```yaml", config_text.rstrip(), "```", ""]
    write_atomic(out / "report.md", "\n".join(md))
    return [*files, out / "report.md"]


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


__all__ = ["recall_curves", "survival_histogram", "training_curves", "write_report"]
