"""lcron_tf for Keras 3 (and Keras-RS) users: the same losses, metrics and layers, on Keras 3.

Import this package *instead of* the Keras 2 modules (``lcron_tf.losses`` & co., which bind
``tf.keras`` to ``tf_keras`` for TFRS): the two flavours never share a process. It never
binds ``tf.keras`` to Keras 2: it undoes the ``TF_USE_LEGACY_KERAS=1`` that ``import lcron_tf``
sets while ``tf.keras`` is still unresolved.

The math is the pure-TF core (:mod:`lcron_tf.ops`, its one loss contract), the behaviour
the Keras 2 classes' (:mod:`lcron_tf.wrappers`); only the Keras bases differ. Conventions
(Keras-RS): ``y_true`` is a ``[batch_size, list_size]`` label tensor with label < 0 = padded
slot, or ``{"labels", "mask"}`` (in direct calls; ``model.compile`` needs ``y_true`` to have
``y_pred``'s structure, so pass the label tensor there); ``y_pred`` is ``[batch_size,
num_stages, list_size]``, first stage first; Keras 3 string reductions; objects registered as
``lcron_tf>Name``.

Only the TensorFlow backend is supported (the core is TensorFlow ops): with
``KERAS_BACKEND=jax`` or ``torch`` the import raises an ``ImportError`` that says so.
"""

from __future__ import annotations

import os
import sys

if "lcron_tf._keras" in sys.modules:
    raise ImportError(
        "lcron_tf's Keras 2 modules (losses, metrics, layers, models, serving, cli) are already "
        "imported in this process and bound tf.keras to tf_keras; lcron_tf.keras3 cannot share "
        "a process with them. Use one flavour per process."
    )

import lcron_tf  # noqa: E402


def _undo_legacy_keras_env() -> None:
    """Restore ``TF_USE_LEGACY_KERAS`` as it was before ``import lcron_tf`` set it.

    Done before TensorFlow is imported when it is not yet (TensorFlow reads the variable at
    import, and again when ``tf.keras`` is first touched); otherwise only while ``tf.keras`` is
    unresolved.
    """
    if "tensorflow" in sys.modules:
        loader = vars(sys.modules["tensorflow"]).get("keras")
        if loader is None or vars(loader).get("_tfll_initialized") is not False:
            return  # tf.keras is resolved already; this flavour uses `keras` itself anyway
    if lcron_tf.ENV_BEFORE_IMPORT is None:
        os.environ.pop("TF_USE_LEGACY_KERAS", None)
    else:
        os.environ["TF_USE_LEGACY_KERAS"] = lcron_tf.ENV_BEFORE_IMPORT


_undo_legacy_keras_env()


def _check_backend(backend: str | None) -> None:
    if backend is not None and backend != "tensorflow":
        raise ImportError(
            "lcron_tf.keras3 supports the TensorFlow backend only (its losses are TensorFlow "
            f"ops). This process uses KERAS_BACKEND={backend!r}: set KERAS_BACKEND=tensorflow "
            "before importing keras."
        )


_check_backend(os.environ.get("KERAS_BACKEND"))  # before `import keras` loads that backend

import keras  # noqa: E402

if not keras.__version__.startswith("3."):
    raise ImportError(f"lcron_tf.keras3 needs Keras 3. Found keras {keras.__version__}.")
_check_backend(keras.backend.backend())  # also a backend chosen in ~/.keras/keras.json

from lcron_tf.keras3.layers import CascadeSelection, CascadeTopK  # noqa: E402
from lcron_tf.keras3.losses import (  # noqa: E402
    ArfLoss,
    ArfV2Loss,
    BceLoss,
    CascadeLoss,
    CascadeRecallLoss,
    FsLambdaLoss,
    FsRankNetLoss,
    IccLoss,
    LcronLoss,
    RankFlowLoss,
    StageTopKLoss,
    UncertaintyWeighting,
    get,
    track_loss_weights,
)
from lcron_tf.keras3.metrics import NDCG, CascadeRankingMetric, JointRecall, StageRecall  # noqa: E402

__all__ = [
    "NDCG",
    "ArfLoss",
    "ArfV2Loss",
    "BceLoss",
    "CascadeLoss",
    "CascadeRankingMetric",
    "CascadeRecallLoss",
    "CascadeSelection",
    "CascadeTopK",
    "FsLambdaLoss",
    "FsRankNetLoss",
    "IccLoss",
    "JointRecall",
    "LcronLoss",
    "RankFlowLoss",
    "StageRecall",
    "StageTopKLoss",
    "UncertaintyWeighting",
    "get",
    "track_loss_weights",
]
