"""lcron_tf: LCRON cascade-ranking losses, layers and models for TensorFlow / TFRS.

Importing this package binds ``tf.keras`` to Keras 2 (``TF_USE_LEGACY_KERAS=1``)
and raises an ``ImportError`` with the fix if Keras 3 was bound already.
"""

from __future__ import annotations

__version__ = "0.1.0"

from lcron_tf import (
    _keras,  # noqa: F401  (must run before any tf.keras access)
    layers,
    losses,
    metrics,
    ops,
)

# models (TFRS glue), data, serving and cli are imported on demand:
# `from lcron_tf.models import CascadeModel`, `from lcron_tf.data import simulate`, ...
__all__ = ["__version__", "layers", "losses", "metrics", "ops"]
