"""lcron_tf: LCRON cascade-ranking losses, layers and models for TensorFlow, Keras 2 and Keras 3.

Two flavours that never share a process:

* the Keras 2 flavour (``tf_keras``, what TensorFlow Recommenders needs):
  ``lcron_tf.losses``, ``lcron_tf.metrics``, ``lcron_tf.layers``, ``lcron_tf.models``,
  ``lcron_tf.serving``, the ``lcron-tf`` command line;
* the Keras 3 flavour (``keras`` 3 / Keras-RS users): :mod:`lcron_tf.keras3`.

Both sit on the same pure-TF math, :mod:`lcron_tf.ops` (no Keras at all).

Importing ``lcron_tf`` sets ``TF_USE_LEGACY_KERAS=1``, so that ``tf.keras`` resolves to Keras 2
when first touched (as TFRS requires: ``import lcron_tf`` before ``import
tensorflow_recommenders`` works). Submodules load on first use. Importing
:mod:`lcron_tf.keras3` undoes the variable again while ``tf.keras`` is still unresolved, so a
Keras 3 process keeps Keras 3 behind ``tf.keras``. The Keras 2 modules raise an
``ImportError`` with the fix if ``tf.keras`` was bound to Keras 3 before them.
"""

from __future__ import annotations

import importlib
import os

__version__ = "0.1.0"

#: ``TF_USE_LEGACY_KERAS`` as it was before lcron_tf set it (``lcron_tf.keras3`` restores it).
ENV_BEFORE_IMPORT = os.environ.get("TF_USE_LEGACY_KERAS")
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_SUBMODULES = (
    "cli", "data", "keras3", "layers", "losses", "metrics", "models", "ops", "schema", "serving",
    "testing", "wrappers",
)

__all__ = ["__version__", "layers", "losses", "metrics", "ops"]


def __getattr__(name: str) -> object:
    if name in _SUBMODULES:
        return importlib.import_module(f"lcron_tf.{name}")
    raise AttributeError(f"module 'lcron_tf' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_SUBMODULES})
