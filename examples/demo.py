"""`make demo`: train a 2-stage LCRON cascade (DSSM retrieval -> DIN ranking) with XLA.

Generates a learnable cascade dataset in memory (RecFlow-like: N = 40 candidates per
request, the top 10 are the ground truth, serving quotas 30 -> 20), trains
``CascadeModel.default(schema, num_stages=2)`` with ``compile(Adam(0.01), jit_compile=True)``
and prints the loss per epoch and JointRecall@10@20 on held-out requests before and after.

    python examples/demo.py [--requests 8192] [--epochs 3] [--batch-size 256] [--no-xla]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import tensorflow as tf

import lcron_tf  # noqa: F401  (binds tf.keras to Keras 2 before anything else)
from lcron_tf._keras import keras
from lcron_tf.metrics import JointRecall
from lcron_tf.models import CascadeModel
from lcron_tf.schema import CascadeSchema

# TODO: switch to the lcron_tf.data simulator once it lands; this tiny generator is enough.
NOISE = 1.0  # relevance noise: the labels are only partly predictable from the features


def make_schema(num_users: int = 500, num_items: int = 3000, latent_dim: int = 4,
                num_buckets: int = 6) -> CascadeSchema:
    return CascadeSchema(
        list_size=40, history_length=20, user_vocab=num_users, item_vocab=num_items,
        user_feature_vocabs=(num_buckets + 1,) * latent_dim,
        item_feature_vocabs=(num_buckets + 1,) * latent_dim,
        stage_groups=("rank_pos", "rank_neg", "coarse_neg", "prerank_neg"),
        gt_num=10, quotas=(30, 20), name="demo",
    )


def make_requests(schema: CascadeSchema, num_requests: int, seed: int) -> dict[str, np.ndarray]:
    """Latent users/items; relevance = <u, v> + noise; features = bucketised latents.

    Labels follow RecFlow: the 10 most relevant candidates get 29..20, the other 30 get
    7 / 6 / 5 by relevance tier. The history holds items the user likes. 20 % of the
    requests have their last 1-8 slots padded.
    """
    world = np.random.default_rng(2025)  # fixed users/items; `seed` draws the requests
    d, buckets = len(schema.user_feature_vocabs), schema.user_feature_vocabs[0] - 1
    users = world.normal(size=(schema.user_vocab, d))
    items = world.normal(size=(schema.item_vocab, d))
    edges = np.quantile(world.normal(size=20000), np.linspace(0, 1, buckets + 1)[1:-1])
    ufeat, ifeat = 1 + np.digitize(users, edges), 1 + np.digitize(items, edges)
    liked = np.argsort(-(users @ items[1:].T), axis=1)[:, :100] + 1  # [users, 100]
    rng = np.random.default_rng(seed)
    n, h, g = schema.list_size, schema.history_length, schema.gt_num
    r = num_requests
    uid = rng.integers(1, schema.user_vocab, size=r)
    cand = np.stack([rng.choice(np.arange(1, schema.item_vocab), n, replace=False)
                     for _ in range(r)])
    rel = np.einsum("rnd,rd->rn", items[cand], users[uid]) + NOISE * rng.normal(size=(r, n))
    rank = np.argsort(np.argsort(-rel, axis=1), axis=1)  # 0 = most relevant
    tier = np.minimum((rank - g) // ((n - g) // 3), 2)
    label = np.where(rank < g, 29.0 - rank, 7.0 - tier).astype(np.float32)
    group = np.where(rank < g, 0, 1 + tier).astype(np.int32)
    hist = np.stack([rng.choice(liked[u], h, replace=False) for u in uid])
    hist[np.arange(h)[None, :] < rng.integers(0, h // 2, size=(r, 1))] = 0  # left padding
    mask = np.ones((r, n), np.float32)
    padded = rng.random(r) < 0.2
    mask[padded] = (np.arange(n)[None, :] < n - rng.integers(1, 9, size=(padded.sum(), 1)))
    return {
        "user_id": uid.astype(np.int64),
        "user_features": ufeat[uid].astype(np.int64),
        "history": hist.astype(np.int64),
        "item_id": (cand * mask).astype(np.int64),
        "item_features": (ifeat[cand] * mask[..., None]).astype(np.int64),
        "label": label * mask,
        "mask": mask,
        "stage_group": np.where(mask > 0, group, -1).astype(np.int32),
    }


def test_loss(model: CascadeModel, test: dict[str, np.ndarray]) -> float:
    """LCRON loss on the first 512 held-out requests (includes ln(sigma), so it can be < 0)."""
    return float(model.compute_loss({k: v[:512] for k, v in test.items()}, training=False))


def joint_recall(model: CascadeModel, test: dict[str, np.ndarray]) -> float:
    metric = JointRecall(k=10, quotas=(30, 20))
    for start in range(0, len(test["label"]), 512):
        batch = {k: v[start : start + 512] for k, v in test.items()}
        metric.update_state({"labels": batch["label"], "mask": batch["mask"]}, model(batch))
    return float(metric.result())


class PrintLoss(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        print(f"  epoch {epoch + 1}: loss {logs['loss']:.4f}  "
              f"train joint_recall@10@20 {logs['joint_recall_at_10_at_20']:.4f}  "
              f"e2e {logs['lcron_e2e']:.4f}  sigma retrieval/ranking "
              f"{logs['lcron_sigma_retrieval']:.3f}/{logs['lcron_sigma_ranking']:.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=8192)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-xla", action="store_true", help="train without jit_compile")
    args = parser.parse_args()
    t0 = time.time()
    keras.utils.set_random_seed(args.seed)
    schema = make_schema()
    train = make_requests(schema, args.requests, seed=args.seed + 1)
    test = make_requests(schema, 2048, seed=args.seed + 2)
    print(f"data: {args.requests} train / 2048 test requests, N={schema.list_size}, "
          f"GT={schema.gt_num}, quotas={schema.quotas}", flush=True)

    model = CascadeModel.default(schema, num_stages=2)  # paper preset: DSSM -> DIN, paper sizes
    before, loss_before = joint_recall(model, test), test_loss(model, test)
    print(f"before training: test loss {loss_before:.4f}  JointRecall@10@20 {before:.4f}",
          flush=True)

    model.compile(optimizer=keras.optimizers.Adam(0.01), jit_compile=not args.no_xla)
    ds = (tf.data.Dataset.from_tensor_slices(train).shuffle(4096, seed=args.seed)
          .batch(args.batch_size, drop_remainder=True).prefetch(2))  # fixed N, fixed B: one compile
    print(f"training {args.epochs} epochs (jit_compile={not args.no_xla}) ...", flush=True)
    model.fit(ds, epochs=args.epochs, verbose=0, callbacks=[PrintLoss()])
    after, loss_after = joint_recall(model, test), test_loss(model, test)
    print(f"after training:  test loss {loss_after:.4f}  JointRecall@10@20 {after:.4f}", flush=True)
    print(f"JointRecall@10@20: {before:.4f} -> {after:.4f}", flush=True)
    print(f"wall time {time.time() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    main()
