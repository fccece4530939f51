"""The one place that binds ``tf.keras`` to Keras 2 (``tf_keras``).

TensorFlow Recommenders 0.7.7 only works with Keras 2. On TensorFlow >= 2.16
``tf.keras`` is Keras 3 unless ``TF_USE_LEGACY_KERAS=1`` is set *before* the
first access of ``tf.keras`` (TensorFlow resolves it lazily, once). Every other
module of lcron_tf imports ``keras`` from here, never ``tf.keras`` directly.
"""

from __future__ import annotations

import os
import sys

if "lcron_tf.keras3" in sys.modules:
    raise ImportError(
        "lcron_tf.keras3 (the Keras 3 flavour) is already imported in this process; lcron_tf's "
        "Keras 2 modules (losses, metrics, layers, models, serving, cli) bind tf.keras to "
        "Keras 2 and cannot share a process with it. Use one flavour per process: "
        "`from lcron_tf.keras3 import ...` for Keras 3 models, `lcron_tf.losses` etc. for "
        "tf_keras / TFRS models."
    )

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

_FIX = (
    "lcron_tf needs Keras 2 (the `tf-keras` package) behind `tf.keras`, because "
    "TensorFlow Recommenders does not support Keras 3. Fix: import lcron_tf before "
    "anything touches `tf.keras`, or start Python with the environment variable "
    "TF_USE_LEGACY_KERAS=1 (e.g. `export TF_USE_LEGACY_KERAS=1`), and make sure "
    "`pip install 'tf-keras==2.21.*'` matches your TensorFlow minor version."
)

try:
    import tf_keras as keras  # noqa: E402
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(f"`tf_keras` is not installed. {_FIX}") from err

if tf.keras.Model is not keras.Model:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "`tf.keras` was already bound to Keras 3 (version "
        f"{getattr(tf.keras, 'version', lambda: '3.x')()}) before lcron_tf was imported. {_FIX}"
    )

register_serializable = keras.utils.register_keras_serializable(package="lcron_tf")

__all__ = ["keras", "tf", "register_serializable"]
