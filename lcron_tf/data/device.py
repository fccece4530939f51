"""Input prefetch onto the accelerator (``tf.data.experimental.prefetch_to_device``)."""

from __future__ import annotations

import tensorflow as tf


def prefetch_to_device(
    dataset: tf.data.Dataset, device: str | None = None, buffer_size: int = 2
) -> tf.data.Dataset:
    """``dataset`` with its next ``buffer_size`` batches copied to ``device`` ahead of use.

    Apply it last (``tf.data`` requires ``prefetch_to_device`` to be the final
    transformation). ``device=None`` picks the first GPU when one is visible and otherwise
    returns ``dataset`` unchanged (on CPU the batches are already where the model runs). For
    multi-replica strategies use ``strategy.distribute_datasets_from_function`` instead,
    which prefetches to every replica itself.

    Args:
      dataset: a dataset of batch dicts.
      device: e.g. ``"/gpu:0"`` or ``"/cpu:0"``; None = the first GPU if any.
      buffer_size: batches kept on the device.

    Returns:
      The prefetching dataset (or ``dataset`` when there is no GPU and ``device`` is None).
    """
    if device is None:
        gpus = tf.config.list_logical_devices("GPU")
        if not gpus:
            return dataset
        device = gpus[0].name
    return dataset.apply(tf.data.experimental.prefetch_to_device(device, buffer_size))
