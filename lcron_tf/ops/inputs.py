"""Input conventions for the Keras-facing losses and metrics, parsed in one place (pure TF).

``y_true`` is either a ``[batch_size, list_size]`` label tensor in which a label < 0
marks a padded slot (the TF-Ranking / Keras-RS convention), or a dict
``{"labels": [B, N], "mask": [B, N]}`` (``"label"`` is accepted for ``"labels"``).
``y_pred`` holds one score tensor per stage, first stage first: a ``[batch_size,
num_stages, list_size]`` tensor, or a list/tuple of ``[batch_size, list_size]`` tensors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import tensorflow as tf


def split_labels_mask(y_true: tf.Tensor | Mapping[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
    """Return ``(labels, mask)``, both float32 ``[batch_size, list_size]``.

    Raises:
      ValueError: a dict without ``labels``/``label`` or ``mask``.
    """
    if isinstance(y_true, Mapping):
        key = "labels" if "labels" in y_true else "label"
        if key not in y_true or "mask" not in y_true:
            raise ValueError(
                "`y_true` as a dict must have the keys 'labels' (or 'label') and 'mask'. "
                f"Received keys: {sorted(y_true)}"
            )
        labels = tf.convert_to_tensor(y_true[key])
        mask = tf.convert_to_tensor(y_true["mask"])
        if not labels.dtype.is_floating:
            labels = tf.cast(labels, tf.float32)
        return labels, tf.cast(mask, labels.dtype)
    labels = tf.convert_to_tensor(y_true)
    if not labels.dtype.is_floating:
        labels = tf.cast(labels, tf.float32)
    mask = tf.cast(labels >= 0, labels.dtype)
    return labels, mask


def split_stages(y_pred: tf.Tensor | Sequence[tf.Tensor]) -> list[tf.Tensor]:
    """Return the per-stage ``[batch_size, list_size]`` score tensors of ``y_pred``.

    Raises:
      ValueError: a tensor ``y_pred`` that is not of rank 3.
    """
    if isinstance(y_pred, Sequence) and not isinstance(y_pred, tf.Tensor):
        return [tf.convert_to_tensor(x) for x in y_pred]
    y_pred = tf.convert_to_tensor(y_pred)
    if y_pred.shape.rank != 3:
        raise ValueError(
            "`y_pred` must be [batch_size, num_stages, list_size] or a list of "
            f"[batch_size, list_size] tensors (first stage first). Received shape {y_pred.shape}"
        )
    return tf.unstack(y_pred, axis=1)
