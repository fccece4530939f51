"""Name -> loss class registry: LCRON and the seven baselines of the paper."""

from __future__ import annotations

from lcron_tf.losses.base import CascadeLoss
from lcron_tf.losses.baselines import (
    ArfLoss,
    ArfV2Loss,
    BceLoss,
    FsLambdaLoss,
    FsRankNetLoss,
    IccLoss,
    RankFlowLoss,
)
from lcron_tf.losses.lcron import LcronLoss

#: The methods of the paper's Tables 2 and 6, in the paper's row order.
LOSSES: dict[str, type[CascadeLoss]] = {
    "bce": BceLoss,
    "icc": IccLoss,
    "rankflow": RankFlowLoss,
    "fs_ranknet": FsRankNetLoss,
    "fs_lambdaloss": FsLambdaLoss,
    "arf": ArfLoss,
    "arf_v2": ArfV2Loss,
    "lcron": LcronLoss,
}

#: Display names as in the paper's tables.
DISPLAY_NAMES: dict[str, str] = {
    "bce": "BCE",
    "icc": "ICC",
    "rankflow": "RankFlow",
    "fs_ranknet": "FS-RankNet",
    "fs_lambdaloss": "FS-LambdaLoss",
    "arf": "ARF",
    "arf_v2": "ARF-v2",
    "lcron": "LCRON",
}


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def names() -> list[str]:
    """The registered loss names, in the paper's table order (LCRON last)."""
    return list(LOSSES)


def get(name: str, **kwargs: object) -> CascadeLoss:
    """Build the loss registered under ``name`` with constructor ``kwargs``.

    Names (case-insensitive, ``-`` = ``_``): ``"lcron"``, ``"bce"``, ``"icc"``,
    ``"rankflow"``, ``"fs_ranknet"``, ``"fs_lambdaloss"``, ``"arf"``, ``"arf_v2"``.

    Raises:
      ValueError: an unknown name.
    """
    if not isinstance(name, str) or _key(name) not in LOSSES:
        raise ValueError(f"Unknown loss {name!r}. Known losses: {names()}")
    return LOSSES[_key(name)](**kwargs)


__all__ = ["DISPLAY_NAMES", "LOSSES", "get", "names"]
