"""Name -> loss class registry: LCRON and the seven baselines of the paper.

:func:`get` is the one place a loss is built by name: the CLI, the benchmarks and user code
call ``get(name, schema=..., quotas=..., **overrides)``; the defaults that follow from a
dataset (``gt_num``, the serving quotas, BCE's sample selection on RecFlow-shaped groups)
are declared by each loss's options dataclass (``schema_defaults``), not here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lcron_tf.losses.arf import ArfLoss, ArfV2Loss
from lcron_tf.losses.base import CascadeLoss
from lcron_tf.losses.bce import BceLoss
from lcron_tf.losses.fs_lambdaloss import FsLambdaLoss
from lcron_tf.losses.fs_ranknet import FsRankNetLoss
from lcron_tf.losses.icc import IccLoss
from lcron_tf.losses.lcron import LcronLoss
from lcron_tf.losses.rankflow import RankFlowLoss
from lcron_tf.wrappers import losses as wrappers_losses
from lcron_tf.wrappers.losses import loss_key

#: The methods of the paper's Tables 2 and 6, in the paper's row order.
LOSSES: dict[str, type[CascadeLoss]] = {
    cls.spec.key: cls
    for cls in (
        BceLoss, IccLoss, RankFlowLoss, FsRankNetLoss, FsLambdaLoss, ArfLoss, ArfV2Loss, LcronLoss
    )
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
    return loss_key(name)


def names() -> list[str]:
    """The registered loss names, in the paper's table order (LCRON last)."""
    return list(LOSSES)


def loss_class(name: str) -> type[CascadeLoss]:
    """The class registered under ``name`` (case-insensitive, ``-`` = ``_``).

    Raises:
      ValueError: an unknown name.
    """
    if not isinstance(name, str) or _key(name) not in LOSSES:
        raise ValueError(f"Unknown loss {name!r}. Known losses: {names()}")
    return LOSSES[_key(name)]


def option_names(name: str) -> tuple[str, ...]:
    """Every option the loss ``name`` accepts (the fields of its options dataclass)."""
    return loss_class(name).spec.options.field_names()


def resolve_options(
    name: str,
    /,
    *,
    schema: Any = None,
    quotas: Sequence[int] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """The option values :func:`get` would use: the loss's dataset defaults, then overrides.

    Raises:
      ValueError: an unknown name or option.
    """
    return wrappers_losses.resolve_options(
        name, loss_class(name).spec, schema, quotas, overrides
    )


def get(
    name: str,
    /,
    *,
    schema: Any = None,
    quotas: Sequence[int] | None = None,
    **overrides: Any,
) -> CascadeLoss:
    """Build the loss registered under ``name``.

    Names (case-insensitive, ``-`` = ``_``): ``"lcron"``, ``"bce"``, ``"icc"``,
    ``"rankflow"``, ``"fs_ranknet"``, ``"fs_lambdaloss"``, ``"arf"``, ``"arf_v2"``.

    Args:
      name: the loss.
      schema: optional :class:`lcron_tf.schema.CascadeSchema`: the loss's dataset defaults
        (``gt_num``, LCRON's ``stage_k = gt_num``, the quotas, BCE's official sample
        selection on RecFlow-shaped stage groups) are taken from it.
      quotas: the model's serving quotas (default ``schema.quotas``), for losses that use
        them.
      **overrides: options (and ``name``/``reduction``) that win over the defaults.

    Raises:
      ValueError: an unknown name or option, or an invalid option value.
    """
    return wrappers_losses.build_loss(
        LOSSES, name, schema, quotas, overrides, ("name", "reduction")
    )


__all__ = [
    "DISPLAY_NAMES",
    "LOSSES",
    "get",
    "loss_class",
    "names",
    "option_names",
    "resolve_options",
]
