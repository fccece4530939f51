"""The official TFRS multitask tutorial model, and the same model + LCRON, side by side.

The model is the tutorial's (``MovielensModel``: string ``user_id`` / ``movie_title``
features, ``StringLookup`` + ``Embedding`` towers, a rating MLP, ``tfrs.tasks.Retrieval``
with ``FactorizedTopK`` and ``tfrs.tasks.Ranking`` with MSE). Read as a cascade, its
dot product is the retrieval stage and its rating MLP the ranking stage. Adding LCRON
(lines marked ``# + LCRON``) means: cascade requests from the same training ratings
(:func:`lcron_tf.data.build_candidates`), and an ``LcronTask`` next to the two tutorial
tasks in ``compute_loss`` (:class:`lcron_tf.models.CascadeMultiTask` puts the three on
one scale). Both models are evaluated on the same test period with the cascade metric
(JointRecall@10@20: the 10 positives of a request, retrieval keeps 30 of 50 candidates,
ranking keeps 20) and the tutorial's own metrics (FactorizedTopK top-100 accuracy over
every title, RMSE). The LCRON model is then exported for TF Serving (string user id in,
titles out). docs/tfrs.md walks through it step by step.

    python examples/tfrs_multitask.py --data-dir /path/with/movielens_100k \\
        [--epochs 3] [--xla loss|full|none] [--export-dir saved_models]

The tutorial model is trained as the tutorial does (Adagrad(0.1), batches of 8,192
ratings); the LCRON model with Adam(0.01) on batches of 256 requests (docs/tfrs.md §5
explains why not Adagrad(0.1)).

MovieLens-100K is read from ``<data-dir>/movielens_100k/`` (or ``$LCRON_DATA_DIR``), never
downloaded (no ``tensorflow_datasets``).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping

import lcron_tf  # noqa: F401  (binds tf.keras to Keras 2: must precede tensorflow_recommenders)

# isort: split
import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from lcron_tf.data import build_candidates, movielens_interactions  # + LCRON
from lcron_tf.losses import LcronLoss  # + LCRON
from lcron_tf.metrics import JointRecall  # + LCRON
from lcron_tf.models import CascadeMultiTask, LcronTask  # + LCRON

GT, QUOTAS = 10, (30, 20)  # JointRecall@10@20: retrieval keeps 30 of 50, ranking keeps 20
POSITIVES = slice(0, GT)  # the positive block of every request (build_candidates' layout)
XLA_MODES = ("none", "loss", "full")


class MovielensModel(tfrs.models.Model):
    """The tutorial's ``MovielensModel``, plus an optional LCRON task.

    ``lcron_weight == 0`` is the tutorial (trained on interaction batches). With
    ``lcron_weight > 0`` it trains on cascade-request batches: LCRON over both stages plus
    the tutorial's two tasks on the requests' positives. ``lookups_in_data=True`` keeps the
    ``StringLookup`` layers out of the towers (they run in tf.data, see :meth:`lookup`) so
    that the whole step can be XLA-compiled.
    """

    def __init__(
        self,
        unique_user_ids: np.ndarray,
        unique_movie_titles: np.ndarray,
        rating_weight: float = 1.0,
        retrieval_weight: float = 1.0,
        lcron_weight: float = 0.0,
        *,
        jit_loss: bool = True,
        lookups_in_data: bool = False,
        embedding_dimension: int = 32,
        lcron_loss: LcronLoss | None = None,
    ) -> None:
        super().__init__()
        self.user_lookup = tf.keras.layers.StringLookup(
            vocabulary=unique_user_ids, mask_token=None)
        self.movie_lookup = tf.keras.layers.StringLookup(
            vocabulary=unique_movie_titles, mask_token=None)
        self.lookups_in_data = lookups_in_data
        inner = [] if lookups_in_data else [self.movie_lookup]
        self.movie_model = tf.keras.Sequential(inner + [
            tf.keras.layers.Embedding(len(unique_movie_titles) + 1, embedding_dimension)])
        inner = [] if lookups_in_data else [self.user_lookup]
        self.user_model = tf.keras.Sequential(inner + [
            tf.keras.layers.Embedding(len(unique_user_ids) + 1, embedding_dimension)])
        self.rating_model = tf.keras.Sequential([
            tf.keras.layers.Dense(256, activation="relu"),
            tf.keras.layers.Dense(128, activation="relu"),
            tf.keras.layers.Dense(1),
        ])
        movies = tf.data.Dataset.from_tensor_slices(unique_movie_titles)
        if lookups_in_data:
            movies = movies.map(self.movie_lookup)
        self.rating_task = tfrs.tasks.Ranking(
            loss=tf.keras.losses.MeanSquaredError(),
            metrics=[tf.keras.metrics.RootMeanSquaredError()],
        )
        self.retrieval_task = tfrs.tasks.Retrieval(
            metrics=tfrs.metrics.FactorizedTopK(candidates=movies.batch(128).map(self.movie_model))
        )
        self.rating_weight = rating_weight
        self.retrieval_weight = retrieval_weight
        self.lcron_weight = lcron_weight
        if lcron_weight:
            self.task = CascadeMultiTask(  # + LCRON
                LcronTask(  # + LCRON
                    loss=lcron_loss or LcronLoss(gt_num=GT, stage_k=GT),  # + LCRON
                    metrics=[JointRecall(k=GT, quotas=QUOTAS)],  # + LCRON
                    stage_names=("retrieval", "ranking"),  # + LCRON
                    jit_compile=jit_loss,  # + LCRON: the LCRON math under XLA, lookups not
                ),  # + LCRON
                retrieval=self.retrieval_task if retrieval_weight else None,  # + LCRON
                ranking=self.rating_task if rating_weight else None,  # + LCRON
                weights={"lcron": lcron_weight, "retrieval": retrieval_weight,  # + LCRON
                         "ranking": rating_weight},  # + LCRON
                positives=POSITIVES,  # + LCRON
            )  # + LCRON

    def lookup(self, features: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """String features -> lookup ids (the tf.data half of ``lookups_in_data``)."""
        out = dict(features)
        out["user_id"] = self.user_lookup(features["user_id"])
        out["movie_title"] = self.movie_lookup(features["movie_title"])
        return out

    def call(self, features: Mapping[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        user_embeddings = self.user_model(features["user_id"])
        movie_embeddings = self.movie_model(features["movie_title"])
        if movie_embeddings.shape.rank == 3:  # cascade requests: [B, N] candidates  # + LCRON
            n = tf.shape(movie_embeddings)[1]  # + LCRON
            pairs = tf.concat(  # + LCRON
                [tf.repeat(user_embeddings[:, None], n, axis=1), movie_embeddings], -1)  # + LCRON
            return user_embeddings, movie_embeddings, self.rating_model(pairs)  # + LCRON
        return (
            user_embeddings,
            movie_embeddings,
            self.rating_model(tf.concat([user_embeddings, movie_embeddings], axis=1)),
        )

    def stage_scores(self, features: Mapping[str, tf.Tensor]) -> tf.Tensor:  # + LCRON
        """Both stages' scores of cascade requests, float32 ``[B, 2, N]``."""
        user, movies, rating = self(features)
        retrieval = tf.einsum("bd,bnd->bn", user, movies)
        return tf.stack([retrieval, tf.squeeze(rating, -1)], axis=1)

    def compute_loss(self, features: Mapping[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        if "label" in features:  # a batch of cascade requests  # + LCRON
            user, movies, rating = self(features)  # + LCRON
            retrieval = tf.einsum("bd,bnd->bn", user, movies)  # + LCRON
            return self.task(  # + LCRON
                features["label"], [retrieval, tf.squeeze(rating, -1)], features["mask"],
                query_embeddings=user, candidate_embeddings=movies,  # + LCRON
                relevance=features["relevance"], relevance_predictions=rating,  # + LCRON
                training=training,  # + LCRON
            )  # + LCRON
        # The tutorial, verbatim (an interaction batch).
        features = dict(features)
        ratings = features.pop("user_rating")
        user_embeddings, movie_embeddings, rating_predictions = self(features)
        rating_loss = self.rating_task(labels=ratings, predictions=rating_predictions)
        retrieval_loss = self.retrieval_task(user_embeddings, movie_embeddings)
        return self.rating_weight * rating_loss + self.retrieval_weight * retrieval_loss


# ------------------------------------------------------------------------------ data


def load_data(data_dir: str | None, seed: int = 0) -> dict:
    """Interactions (strings, as TFDS gives them) and the cascade requests built from them."""
    ratings = movielens_interactions(data_dir)
    lists = build_candidates(  # + LCRON
        ratings, query_key="user_id", item_key="movie_title", relevance_key="user_rating",
        timestamp_key="timestamp", split="time", test_fraction=0.2,
        positives_per_request=GT, min_positives=GT, popular_negatives=20,
        uniform_negatives=20, seed=seed,
    )
    return {"ratings": ratings, "lists": lists,
            "unique_user_ids": np.unique(ratings["user_id"]).astype(str),
            "unique_movie_titles": np.unique(ratings["movie_title"]).astype(str)}


def interaction_dataset(
    ratings: Mapping[str, np.ndarray], rows: np.ndarray, batch: int, shuffle: bool, seed: int = 0
) -> tf.data.Dataset:
    keep = {k: ratings[k][rows] for k in ("user_id", "movie_title", "user_rating")}
    keep["user_id"] = keep["user_id"].astype(str)
    keep["movie_title"] = keep["movie_title"].astype(str)
    ds = tf.data.Dataset.from_tensor_slices(keep)
    if shuffle:
        ds = ds.shuffle(len(rows), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch).cache()


def joint_recall(model: MovielensModel, requests: Mapping[str, np.ndarray]) -> float:
    """JointRecall@10@20 of the model's cascade on the requests."""
    metric = JointRecall(k=GT, quotas=QUOTAS)
    for lo in range(0, len(requests["label"]), 1024):
        feats = {"user_id": tf.constant(requests["user_id"][lo:lo + 1024].astype(str)),
                 "movie_title": tf.constant(requests["movie_title"][lo:lo + 1024].astype(str))}
        if model.lookups_in_data:
            feats = model.lookup(feats)
        metric.update_state(
            {"labels": requests["label"][lo:lo + 1024], "mask": requests["mask"][lo:lo + 1024]},
            model.stage_scores(feats),
        )
    return float(metric.result())


def make_optimizer(name: str) -> tf.keras.optimizers.Optimizer:
    if name == "adagrad":  # the tutorial's
        return tf.keras.optimizers.Adagrad(0.1)
    if name == "adagrad-small-acc":
        return tf.keras.optimizers.Adagrad(0.1, initial_accumulator_value=1e-6)
    if name == "adam":
        return tf.keras.optimizers.Adam(0.01)
    raise ValueError(f"unknown optimizer {name!r}")


def tutorial_metrics(model: MovielensModel, test: tf.data.Dataset) -> dict[str, float]:
    """FactorizedTopK top-100 and RMSE on the test ratings (never XLA: tf.data inside)."""
    model.jit_compile = False  # FactorizedTopK streams the corpus through tf.data
    res = model.evaluate(test, return_dict=True, verbose=0)
    return {"top100": res["factorized_top_k/top_100_categorical_accuracy"],
            "rmse": res["root_mean_squared_error"]}


# ------------------------------------------------------------------------------ export


def export_model(model: MovielensModel, base_dir: str, titles: np.ndarray, name: str):
    """Export the cascade for TF Serving: user id string in, titles out (docs/tfrs.md §6)."""
    from lcron_tf.serving.tfrs_export import export_tfrs

    def user_tower(q):
        ids = model.user_lookup(q["user_id"]) if model.lookups_in_data else q["user_id"]
        return model.user_model(ids, training=False)

    def movie_tower(c):
        ids = model.movie_lookup(c["movie_title"]) if model.lookups_in_data else c["movie_title"]
        return model.movie_model(ids, training=False)

    def retrieval(q, c):
        return tf.einsum("bd,bnd->bn", user_tower(q), movie_tower(c))

    def ranking(q, c):
        user, movies = user_tower(q), movie_tower(c)
        pairs = tf.concat([tf.repeat(user[:, None], tf.shape(movies)[1], axis=1), movies], -1)
        return tf.squeeze(model.rating_model(pairs, training=False), -1)

    return export_tfrs(
        model, base_dir, model_name=name,
        query_signature={"user_id": tf.TensorSpec([None], tf.string)},
        candidate_signature={"movie_title": tf.TensorSpec([None, None], tf.string)},
        stages={"retrieval": retrieval, "ranking": ranking}, quotas=QUOTAS,
        item_id="movie_title", query_tower=user_tower, candidate_tower=movie_tower,
        corpus={"movie_title": titles.astype(object)},
    )


# ------------------------------------------------------------------------------ main


def train(
    data: dict, *, lcron: bool, epochs: int, xla: str, optimizer: str, seed: int = 0,
    request_batch: int = 256, interaction_batch: int = 8192,
) -> tuple[MovielensModel, dict]:
    """Train one model (the tutorial: batches of 8,192 ratings; LCRON: 256 requests)."""
    tf.keras.utils.set_random_seed(seed)
    full = lcron and xla == "full"
    model = MovielensModel(
        data["unique_user_ids"], data["unique_movie_titles"], rating_weight=1.0,
        retrieval_weight=1.0, lcron_weight=1.0 if lcron else 0.0,
        jit_loss=lcron and xla == "loss", lookups_in_data=full,
    )
    lists = data["lists"]
    if lcron:
        train_ds = lists.dataset("train", request_batch, shuffle=True, seed=seed)
    else:
        train_ds = interaction_dataset(
            data["ratings"], lists.rows["train"], interaction_batch, shuffle=True, seed=seed)
    test_ds = interaction_dataset(data["ratings"], lists.rows["test"], 4096, shuffle=False)
    if full:
        train_ds = train_ds.map(model.lookup)
        test_ds = test_ds.map(model.lookup)
    before = joint_recall(model, lists.test)
    model.compile(optimizer=make_optimizer(optimizer), jit_compile=full)
    t0 = time.perf_counter()
    history = model.fit(train_ds, epochs=epochs, verbose=0).history
    fit_s = time.perf_counter() - t0
    out = {"joint_recall_before": before, "joint_recall": joint_recall(model, lists.test),
           "fit_s": fit_s, "history": history, **tutorial_metrics(model, test_ds)}
    return model, out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None,
                        help="folder holding movielens_100k/ (default: $LCRON_DATA_DIR)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--xla", choices=XLA_MODES, default="loss",
                        help="loss: LcronTask(jit_compile=True), towers and TFRS tasks in the "
                             "TF graph (default); full: lookups in tf.data and the whole step "
                             "compiled; none: no XLA")
    parser.add_argument("--optimizer", default="adam",
                        choices=("adam", "adagrad", "adagrad-small-acc"),
                        help="optimizer of the LCRON model: adam = Adam(0.01); adagrad = the "
                             "tutorial's Adagrad(0.1) (docs/tfrs.md §5: it leaves LCRON's "
                             "retrieval stage still)")
    parser.add_argument("--export-dir", default=None,
                        help="export the LCRON model to DIR/<model-name>/<version>/")
    parser.add_argument("--model-name", default="movielens_lcron")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baseline-optimizer", default="adagrad",
                        choices=("adam", "adagrad", "adagrad-small-acc"),
                        help="optimizer of the tutorial model (default: the tutorial's own "
                             "Adagrad(0.1))")
    parser.add_argument("--interaction-batch", type=int, default=8192,
                        help="ratings per step of the tutorial model (default: the "
                             "tutorial's 8192; 2560 = the ratings of one 256-request batch)")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    data = load_data(args.data_dir, seed=args.seed)
    lists = data["lists"]
    print(f"cascade requests: {lists.report['train']['requests']} train / "
          f"{lists.report['test']['requests']} test, N = {lists.list_size} "
          f"({time.perf_counter() - t0:.1f} s)", flush=True)
    rows = []
    for lcron in (False, True):
        model, res = train(data, lcron=lcron, epochs=args.epochs, xla=args.xla,
                           optimizer=args.optimizer if lcron else args.baseline_optimizer,
                           seed=args.seed, interaction_batch=args.interaction_batch)
        name = "tutorial + LCRON" if lcron else "tutorial (2 tasks)"
        rows.append((name, res))
        print(f"{name:<20} JointRecall@{GT}@{QUOTAS[-1]} {res['joint_recall_before']:.4f} -> "
              f"{res['joint_recall']:.4f}   FactorizedTopK top-100 {res['top100']:.4f}   "
              f"RMSE {res['rmse']:.4f}   fit {res['fit_s']:.1f} s", flush=True)
    base, ours = rows[0][1], rows[1][1]
    print(f"JointRecall@{GT}@{QUOTAS[-1]} {base['joint_recall']:.4f} -> {ours['joint_recall']:.4f}"
          f"   (tutorial [{args.baseline_optimizer}] -> tutorial + LCRON [{args.optimizer}, "
          f"xla={args.xla}], {args.epochs} epochs)", flush=True)
    if args.export_dir:
        path = export_model(model, args.export_dir, data["unique_movie_titles"], args.model_name)
        loaded = tf.saved_model.load(str(path))
        rec = loaded.signatures["recommend"](user_id=tf.constant(["42"]))
        titles = [t.decode() for t in rec["item_ids"].numpy()[0][:5]]
        print(f"exported to {path}; recommend(user_id='42') -> {titles} ...", flush=True)
    print(f"wall time {time.perf_counter() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    main()
