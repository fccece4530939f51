"""Add LCRON to an existing TFRS model in a few lines.

A plain TFRS model: a two-tower retrieval model (user tower, item tower, dot product)
and a ranking MLP, each trained by its own ``tfrs.tasks.Ranking`` (binary cross-entropy
on "is this candidate in the top GT"). Adding LCRON means replacing the two tasks by
ONE ``LcronTask`` that sees both stages' scores (lines marked ``# + LCRON``):

    self.task = LcronTask(stage_names=("retrieval", "ranking"),
                          metrics=[JointRecall(k=5, quotas=(15, 10))])
    ...
    return self.task(batch["label"], [retrieval_scores, ranking_scores], batch["mask"])

The script trains both versions on the same generated data (N = 30 candidates per
request, GT = top 5, cascade 30 -> 15 -> 10) and prints JointRecall@5@10.

    python examples/tfrs_add_lcron.py [--epochs 4]
"""

from __future__ import annotations

import argparse
import time

import lcron_tf  # noqa: F401  (binds tf.keras to Keras 2: must precede tensorflow_recommenders)

# isort: split
import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from lcron_tf._keras import keras
from lcron_tf.losses import LcronLoss
from lcron_tf.metrics import JointRecall
from lcron_tf.models import LcronTask

NUM_USERS, NUM_ITEMS, N, GT, QUOTAS = 100, 400, 30, 5, (15, 10)


def make_requests(num_requests: int, seed: int) -> dict[str, np.ndarray]:
    world = np.random.default_rng(7)
    users, items = world.normal(size=(NUM_USERS, 4)), world.normal(size=(NUM_ITEMS, 4))
    rng = np.random.default_rng(seed)
    uid = rng.integers(1, NUM_USERS, size=num_requests)
    cand = np.stack([rng.choice(np.arange(1, NUM_ITEMS), N, replace=False)
                     for _ in range(num_requests)])
    rel = np.einsum("rnd,rd->rn", items[cand], users[uid]) + 0.5 * rng.normal(size=cand.shape)
    rank = np.argsort(np.argsort(-rel, axis=1), axis=1)
    label = np.where(rank < GT, 30.0 - rank, 5.0 - rank // 10).astype(np.float32)
    return {"user_id": uid, "item_id": cand, "label": label,
            "mask": np.ones_like(label, dtype=np.float32)}


class TwoStageModel(tfrs.Model):
    def __init__(self, use_lcron: bool) -> None:
        super().__init__()
        self.use_lcron = use_lcron
        # The user's existing towers, unchanged.
        self.user_model = keras.Sequential(
            [keras.layers.Embedding(NUM_USERS, 32), keras.layers.Dense(32)])
        self.item_model = keras.Sequential(
            [keras.layers.Embedding(NUM_ITEMS, 32), keras.layers.Dense(32)])
        self.ranker = keras.Sequential(
            [keras.layers.Dense(64, activation="relu"), keras.layers.Dense(1)])
        if use_lcron:
            self.task = LcronTask(  # + LCRON
                loss=LcronLoss(gt_num=GT, stage_k=GT),  # + LCRON
                metrics=[JointRecall(k=GT, quotas=QUOTAS)],  # + LCRON
                stage_names=("retrieval", "ranking"),  # + LCRON
            )  # + LCRON
        else:
            bce = keras.losses.BinaryCrossentropy(from_logits=True)
            self.retrieval_task = tfrs.tasks.Ranking(loss=bce)
            self.ranking_task = tfrs.tasks.Ranking(loss=bce)

    def call(self, batch: dict) -> tf.Tensor:
        """Scores of both stages, float32 [B, 2, N]."""
        user = self.user_model(batch["user_id"])  # [B, 32]
        items = self.item_model(batch["item_id"])  # [B, N, 32]
        retrieval = tf.einsum("bd,bnd->bn", user, items)
        pairs = tf.concat([tf.repeat(user[:, None, :], N, axis=1), items], axis=-1)
        ranking = tf.squeeze(self.ranker(pairs), axis=-1)
        return tf.stack([retrieval, ranking], axis=1)

    def compute_loss(self, batch: dict, training: bool = False) -> tf.Tensor:
        retrieval, ranking = tf.unstack(self(batch), axis=1)
        if self.use_lcron:
            return self.task(batch["label"], [retrieval, ranking], batch["mask"])  # + LCRON
        is_gt = tf.cast(batch["label"] > 30.0 - GT - 0.5, tf.float32)[..., None]  # [B, N, 1]
        return (self.retrieval_task(is_gt, retrieval[..., None], sample_weight=batch["mask"])
                + self.ranking_task(is_gt, ranking[..., None], sample_weight=batch["mask"]))


def joint_recall(model: TwoStageModel, test: dict[str, np.ndarray]) -> float:
    metric = JointRecall(k=GT, quotas=QUOTAS)
    metric.update_state({"labels": test["label"], "mask": test["mask"]}, model(test))
    return float(metric.result())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--requests", type=int, default=4096)
    args = parser.parse_args()
    t0 = time.time()
    train, test = make_requests(args.requests, seed=1), make_requests(1024, seed=2)
    ds = tf.data.Dataset.from_tensor_slices(train).shuffle(4096, seed=0).batch(
        128, drop_remainder=True)
    for use_lcron in (False, True):
        keras.utils.set_random_seed(0)
        model = TwoStageModel(use_lcron)
        before = joint_recall(model, test)
        model.compile(optimizer=keras.optimizers.Adam(0.01), jit_compile=True)
        history = model.fit(ds, epochs=args.epochs, verbose=0).history
        name = "TFRS + LcronTask   " if use_lcron else "TFRS, 2 BCE tasks  "
        print(f"{name} loss {history['loss'][0]:.4f} -> {history['loss'][-1]:.4f}   "
              f"JointRecall@{GT}@{QUOTAS[-1]} {before:.4f} -> {joint_recall(model, test):.4f}",
              flush=True)
    print(f"wall time {time.time() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    main()
