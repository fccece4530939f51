"""Run in a subprocess by test_cascade_distribute.py: MirroredStrategy on 2 logical CPUs.

The logical devices must be configured before TensorFlow initialises its devices, which
is why this runs in a fresh interpreter. Prints one JSON line with the measurements.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tensorflow as tf  # noqa: E402

import lcron_tf  # noqa: E402,F401  (binds tf.keras to Keras 2 first)

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

import numpy as np  # noqa: E402
from models_synth import make_batch, make_schema  # noqa: E402

from lcron_tf._keras import keras  # noqa: E402
from lcron_tf.models import CascadeModel  # noqa: E402

GLOBAL_BATCH = 32
STEPS = 3


def build(schema: object) -> CascadeModel:
    return CascadeModel.default(
        schema, 2, emb_dim=4, retrieval_units=(16, 8), ranker_units=(16, 8), attention_units=8
    )


def main() -> None:
    schema = make_schema()
    data = make_batch(schema, GLOBAL_BATCH * STEPS, seed=3)
    first = {k: v[:GLOBAL_BATCH] for k, v in data.items()}
    ds = tf.data.Dataset.from_tensor_slices(data).batch(GLOBAL_BATCH, drop_remainder=True)

    keras.utils.set_random_seed(0)
    plain = build(schema)
    plain(first)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        mirrored = build(schema)
        mirrored(first)
    mirrored.set_weights(plain.get_weights())

    # 1) The same global batch: single-device loss vs the sum of the per-replica losses.
    loss_plain = float(plain.compute_loss(first, training=False))
    dist = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices(first).batch(GLOBAL_BATCH)
    )
    per_replica = strategy.run(
        tf.function(lambda b: mirrored.compute_loss(b, training=False)), args=(next(iter(dist)),)
    )
    loss_mirrored = float(strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None))
    replica_batches = [
        int(x.shape[0]) for x in strategy.experimental_local_results(next(iter(dist))["label"])
    ]

    # 2) fit: no strategy (graph mode) vs 2 replicas with jit_compile=True (per-replica XLA).
    plain.compile(optimizer=keras.optimizers.Adam(0.01), jit_compile=False)
    with strategy.scope():
        mirrored.compile(optimizer=keras.optimizers.Adam(0.01), jit_compile=True)
    h_plain = plain.fit(ds, epochs=1, verbose=0).history
    h_mirrored = mirrored.fit(ds, epochs=1, verbose=0).history
    w_diff = max(
        float(np.max(np.abs(a - b))) for a, b in zip(plain.get_weights(), mirrored.get_weights())
    )
    print(
        "RESULT "
        + json.dumps(
            {
                "num_replicas": strategy.num_replicas_in_sync,
                "replica_batches": replica_batches,
                "loss_plain": loss_plain,
                "loss_mirrored": loss_mirrored,
                "fit_loss_plain": h_plain["loss"][-1],
                "fit_loss_mirrored": h_mirrored["loss"][-1],
                "joint_recall_plain": h_plain["joint_recall_at_4_at_8"][-1],
                "joint_recall_mirrored": h_mirrored["joint_recall_at_4_at_8"][-1],
                "jit_per_replica": mirrored._jit_per_replica,
                "max_weight_diff": w_diff,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
