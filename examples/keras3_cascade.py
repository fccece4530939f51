"""A two-stage cascade in Keras 3 (Keras-RS style), trained end to end with LCRON.

Keras 3 flavour of lcron_tf (``lcron_tf.keras3``; no tf_keras, no TFRS in this process):

* retrieval: a two-tower model, the dot product of a query embedding (user id + user
  features) and a candidate embedding (item id + item features), for every candidate;
* ranking: a head over each (query, candidate) pair: Keras-RS's ``DotInteraction`` (DLRM's
  pairwise dot products of the feature embeddings) followed by an MLP;
* the model outputs ``[batch_size, 2, list_size]`` stage scores (first stage first) and is
  compiled with ``lcron_tf.keras3.LcronLoss`` and ``JointRecall`` under ``jit_compile=True``;
  the learned stage weights ``sigma`` train with the model's optimizer
  (``track_loss_weights``);
* evaluated with JointRecall@10@20 (the cascade) and Keras-RS's ``NDCG@10`` of the ranking
  stage, saved as ``.keras`` (reloaded, predictions compared) and exported as a SavedModel for
  TF Serving (``DIR/<model_name>/1/``).

Data: MovieLens-100K candidate lists (``lcron_tf.data.build_movielens``) from ``--data-dir`` /
``LCRON_DATA_DIR`` (read locally, never downloaded). Needs the ``keras3`` extra
(``pip install 'lcron_tf[keras3]'``: keras-rs 0.4.0).

    python examples/keras3_cascade.py --epochs 3 --export-dir /tmp/k3_export
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import keras  # noqa: E402, I001
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import lcron_tf.keras3 as k3  # first: a Keras 3 process (never binds tf_keras)
from lcron_tf.data import build_movielens  # noqa: E402

try:
    import keras_rs  # noqa: E402
except ImportError:  # pragma: no cover - depends on the install
    sys.exit("this example needs Keras-RS: pip install 'lcron_tf[keras3]' (keras-rs==0.4.0)")


def inputs_of(arrays: dict) -> dict:
    keys = ("user_id", "user_features", "item_id", "item_features")
    return {k: arrays[k] for k in keys}


def targets_of(arrays: dict) -> np.ndarray:
    """Labels with the Keras-RS padding convention: label < 0 marks a padded slot."""
    return np.where(arrays["mask"] > 0, arrays["label"], -1.0).astype(np.float32)


def build_model(schema, dim: int = 16) -> keras.Model:
    n, u, f = schema.list_size, schema.num_user_features, schema.num_item_features
    user_id = keras.Input((), dtype="int64", name="user_id")
    user_feats = keras.Input((u,), dtype="int64", name="user_features")
    item_id = keras.Input((n,), dtype="int64", name="item_id")
    item_feats = keras.Input((n, f), dtype="int64", name="item_features")

    def field_embeddings(ids, vocabs, prefix):  # one table per field: [..., fields, dim]
        columns = keras.ops.unstack(ids, axis=-1)
        embs = [keras.layers.Embedding(v, dim, name=f"{prefix}_{i}")(c)
                for i, (c, v) in enumerate(zip(columns, vocabs))]
        return keras.ops.stack(embs, axis=-2)

    user_emb = keras.layers.Embedding(schema.user_vocab, dim, name="user_id_emb")(user_id)
    user_f = field_embeddings(user_feats, schema.user_feature_vocabs, "user_f")  # [B, U, d]
    item_emb = keras.layers.Embedding(schema.item_vocab, dim, name="item_id_emb")(item_id)
    item_f = field_embeddings(item_feats, schema.item_feature_vocabs, "item_f")  # [B, N, F, d]

    # Retrieval: two towers and a dot product (first stage).
    query = keras.layers.Concatenate()([user_emb, keras.layers.Flatten()(user_f)])
    query = keras.layers.Dense(32, name="query_tower")(query)  # [B, 32]
    cand = keras.layers.Concatenate()([item_emb, keras.layers.Reshape((n, f * dim))(item_f)])
    cand = keras.layers.Dense(32, name="candidate_tower")(cand)  # [B, N, 32]
    retrieval = keras.ops.einsum("bnd,bd->bn", cand, query)

    # Ranking: DLRM-style feature interactions of every (query, candidate) pair.
    per_candidate = [keras.ops.repeat(user_emb[:, None, :], n, axis=1), item_emb]
    per_candidate += [keras.ops.repeat(user_f[:, None, i, :], n, axis=1) for i in range(u)]
    per_candidate += [item_f[:, :, i, :] for i in range(f)]
    flat = [keras.layers.Reshape((dim,))(keras.ops.reshape(x, (-1, dim))) for x in per_candidate]
    crossed = keras_rs.layers.DotInteraction(self_interaction=False)(flat)  # [B*N, pairs]
    hidden = keras.layers.Dense(64, activation="relu")(crossed)
    ranking = keras.ops.reshape(keras.layers.Dense(1)(hidden), (-1, n))

    scores = keras.ops.stack([retrieval, ranking], axis=1)  # [B, 2, N], first stage first
    return keras.Model(
        {"user_id": user_id, "user_features": user_feats, "item_id": item_id,
         "item_features": item_feats},
        scores, name="keras3_cascade",
    )


def evaluate(model: keras.Model, schema, x: dict, y: np.ndarray) -> dict:
    scores = model.predict(x, batch_size=512, verbose=0)
    joint = k3.JointRecall(k=schema.gt_num, quotas=schema.quotas)
    joint.update_state(y, scores)
    ndcg = keras_rs.metrics.NDCG(k=10, name="ndcg_at_10")  # Keras-RS, on the ranking stage
    ndcg.update_state(np.maximum(y, 0.0), scores[:, -1], sample_weight=None)
    return {"joint_recall": float(joint.result()), "ranking_ndcg_at_10": float(ndcg.result())}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=None, help="folder holding movielens_100k/ "
                   "(default $LCRON_DATA_DIR)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--learning-rate", type=float, default=0.01)
    p.add_argument("--export-dir", default=None, help="writes DIR/<model-name>/1/ (default: a "
                   "temporary folder)")
    p.add_argument("--model-name", default="keras3_cascade")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    schema, train = build_movielens(args.data_dir, split="train")
    _, test = build_movielens(args.data_dir, split="test")
    x_train, y_train = inputs_of(train), targets_of(train)
    x_test, y_test = inputs_of(test), targets_of(test)
    print(f"MovieLens-100K cascade: {len(y_train)} train / {len(y_test)} test requests, "
          f"N={schema.list_size}, quotas={schema.quotas}, GT={schema.gt_num}")

    model = build_model(schema)
    loss = k3.LcronLoss(gt_num=schema.gt_num, stage_k=schema.gt_num, tau=50.0)
    k3.track_loss_weights(model, loss)  # the learned sigmas train with the model's optimizer
    joint = k3.JointRecall(k=schema.gt_num, quotas=schema.quotas, name="joint_recall")
    model.compile(optimizer=keras.optimizers.Adam(args.learning_rate), loss=loss,
                  metrics=[joint], jit_compile=True)
    before = evaluate(model, schema, x_test, y_test)
    start = time.perf_counter()
    model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs, verbose=2)
    after = evaluate(model, schema, x_test, y_test)
    q = schema.quotas
    print(f"trained {args.epochs} epoch(s) in {time.perf_counter() - start:.1f} s; "
          f"sigma = {np.round(np.asarray(loss.weighting.sigma), 3).tolist()}")
    print(f"JointRecall@{schema.gt_num}@{q[-1]} {before['joint_recall']:.4f} -> "
          f"{after['joint_recall']:.4f}")
    print(f"ranking NDCG@10 (keras_rs) {before['ranking_ndcg_at_10']:.4f} -> "
          f"{after['ranking_ndcg_at_10']:.4f}")

    base = Path(args.export_dir) if args.export_dir else Path(tempfile.mkdtemp())
    saved = base / f"{args.model_name}.keras"
    base.mkdir(parents=True, exist_ok=True)
    model.save(saved)
    reloaded = keras.models.load_model(saved)
    sample = {k: v[:64] for k, v in x_test.items()}
    same = np.array_equal(reloaded.predict(sample, verbose=0), model.predict(sample, verbose=0))
    print(f"saved {saved}; reloaded predictions identical: {same}")
    export = base / args.model_name / "1"
    if export.exists():
        sys.exit(f"{export} exists: choose another --export-dir (nothing was overwritten)")
    model.export(str(export))
    served = tf.saved_model.load(str(export)).signatures["serving_default"]
    out = served(**{k: tf.constant(v) for k, v in sample.items()})
    match = np.allclose(next(iter(out.values())).numpy(), model.predict(sample, verbose=0),
                        rtol=1e-5, atol=1e-5)
    print(f"exported {export} (TF Serving layout); serving_default matches: {match}")
    return {"before": before, "after": after, "reloaded_identical": same, "export": str(export)}


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
