"""Trace-time argument checks shared by every op (pure TF, no Keras).

All checks use static shapes and Python values, so they run once while a
``tf.function`` is traced and cost nothing inside a compiled (XLA) step.
Runtime asserts are deliberately avoided: XLA drops them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

SORT_CHOICES = ("neural", "soft")
MODE_CHOICES = ("masked", "reference")
#: The one default of every ``mode=`` argument (losses, layers, ops). ``"masked"`` is the
#: mode whose promise users rely on (padded slots are fully excluded, whatever they hold);
#: ``"reference"`` reproduces the official code, quirks included, and is opt-in for parity.
DEFAULT_MODE = "masked"
IMPL_CHOICES = ("auto", "dense", "lean")
#: Smallest accepted relaxed-sort temperature. Below it ``scores / tau`` overflows float32
#: for ordinary scores (|s| N ~ 1e8 gives 1e8 / 1e-30 > 3.4e38) and the loss becomes NaN.
MIN_TAU = 1e-20


def float_dtype(x: tf.Tensor) -> tf.DType:
    """The float dtype to compute in: ``x``'s if floating, else float32."""
    return x.dtype if x.dtype.is_floating else tf.float32


def check_rank2(name: str, x: tf.Tensor) -> None:
    """Raise ``ValueError`` unless ``x`` has static rank 2 (``[batch_size, list_size]``)."""
    rank = x.shape.rank
    if rank is not None and rank != 2:
        raise ValueError(
            f"`{name}` must have shape [batch_size, list_size] (rank 2). "
            f"Received: {name}.shape={x.shape}"
        )


def check_same_shape(name_a: str, a: tf.Tensor, name_b: str, b: tf.Tensor) -> None:
    """Raise ``ValueError`` if the static shapes of ``a`` and ``b`` are incompatible."""
    if not a.shape.is_compatible_with(b.shape):
        raise ValueError(
            f"`{name_a}` and `{name_b}` must have the same shape. "
            f"Received: {name_a}.shape={a.shape}, {name_b}.shape={b.shape}"
        )


def check_positive(name: str, value: float) -> float:
    """Return ``float(value)``; raise ``ValueError`` unless it is a finite number > 0."""
    try:
        v = float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"`{name}` must be a positive number. Received: {name}={value!r}") from err
    if not v > 0 or v == float("inf"):
        raise ValueError(f"`{name}` must be a finite number > 0. Received: {name}={value!r}")
    return v


def check_tau(name: str, tau: float) -> float:
    """Return ``float(tau)``; raise ``ValueError`` unless ``MIN_TAU <= tau < inf``."""
    v = check_positive(name, tau)
    if v < MIN_TAU:
        raise ValueError(
            f"`{name}` must be >= {MIN_TAU:g}: smaller temperatures overflow float32 "
            f"(scores / {name} becomes inf and the loss NaN). Received: {name}={tau!r}"
        )
    return v


def check_k(name: str, k: int, list_size: int | None) -> int:
    """Return ``int(k)``; raise ``ValueError`` unless ``1 <= k <= list_size``."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise ValueError(f"`{name}` must be an int >= 1. Received: {name}={k!r}")
    k = int(k)
    if k < 1:
        raise ValueError(f"`{name}` must be >= 1. Received: {name}={k}")
    if list_size is not None and k > list_size:
        raise ValueError(
            f"`{name}` must be <= list_size (the number of candidates N={list_size}). "
            f"Received: {name}={k}"
        )
    return k


def check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    """Return ``value``; raise ``ValueError`` if it is not one of ``choices``."""
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {tuple(choices)}. Received: {name}={value!r}")
    return value


def per_stage_ks(stage_k: int | Sequence[int], num_stages: int, list_size: int | None) -> list[int]:
    """Expand ``stage_k`` (an int or one int per stage) to a checked list of ``num_stages`` ints."""
    if isinstance(stage_k, int | np.integer) and not isinstance(stage_k, bool):
        ks = [int(stage_k)] * num_stages
    elif isinstance(stage_k, Sequence | np.ndarray) and not isinstance(stage_k, str):
        ks = list(stage_k)
        if len(ks) != num_stages:
            raise ValueError(
                f"`stage_k` must be an int or a sequence with one int per stage "
                f"({num_stages} stages). Received: stage_k={stage_k!r}"
            )
    else:
        raise ValueError(
            "`stage_k` must be an int >= 1 or a sequence with one int per stage. "
            f"Received: stage_k={stage_k!r}"
        )
    return [check_k(f"stage_k[{i}]", k, list_size) for i, k in enumerate(ks)]
