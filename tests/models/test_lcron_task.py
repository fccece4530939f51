"""LcronTask: inside a user-written tfrs.Model, reduction, metrics, config."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_recommenders as tfrs
from models_synth import make_batch, make_schema

from lcron_tf._keras import keras
from lcron_tf.losses import LcronLoss, StageTopKLoss
from lcron_tf.metrics import JointRecall
from lcron_tf.models import LcronTask

SCHEMA = make_schema()


class UserTwoTowerRanker(tfrs.Model):
    """What a TFRS user already has: a two-tower retrieval model and a ranking MLP."""

    def __init__(self, task: LcronTask) -> None:
        super().__init__()
        self.user_model = keras.Sequential(
            [keras.layers.Embedding(SCHEMA.user_vocab, 8), keras.layers.Dense(8)]
        )
        self.item_model = keras.Sequential(
            [keras.layers.Embedding(SCHEMA.item_vocab, 8), keras.layers.Dense(8)]
        )
        self.ranker = keras.Sequential(
            [keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)]
        )
        self.task = task  # <- the only LCRON line in __init__

    def compute_loss(self, batch, training=False):
        user = self.user_model(batch["user_id"])  # [B, 8]
        items = self.item_model(batch["item_id"])  # [B, N, 8]
        retrieval = tf.einsum("bd,bnd->bn", user, items)
        pairs = tf.concat([tf.repeat(user[:, None], tf.shape(items)[1], axis=1), items], -1)
        ranking = tf.squeeze(self.ranker(pairs), -1)
        return self.task(batch["label"], [retrieval, ranking], batch["mask"], training=training)


@pytest.fixture(scope="module")
def data():
    return make_batch(SCHEMA, 256, seed=5)


def test_lcron_task_in_user_tfrs_model_fits_and_trains_sigma(data):
    keras.utils.set_random_seed(1)
    task = LcronTask(
        loss=LcronLoss(gt_num=4, stage_k=4),
        metrics=[JointRecall(k=4, quotas=(12, 8))],
        stage_names=("retrieval", "ranking"),
    )
    model = UserTwoTowerRanker(task)
    model.compile(optimizer=keras.optimizers.Adam(0.02))
    sigma_before = task.loss_weighting.sigma.numpy().copy()
    ds = tf.data.Dataset.from_tensor_slices(data).batch(32, drop_remainder=True)
    hist = model.fit(ds, epochs=3, verbose=0).history
    assert hist["loss"][-1] < hist["loss"][0]
    assert hist["joint_recall_at_4_at_8"][-1] > hist["joint_recall_at_4_at_8"][0]
    for key in ("lcron_e2e", "lcron_single_retrieval", "lcron_single_ranking",
                "lcron_sigma_retrieval", "lcron_sigma_ranking"):
        assert key in hist and np.isfinite(hist[key]).all(), key
    # The uncertainty weights are model variables, trained by the model's single optimizer.
    assert any(v is task.loss_weighting.log_sigma for v in model.trainable_variables)
    assert not np.allclose(task.loss_weighting.sigma.numpy(), sigma_before)


def test_loss_is_global_batch_average_with_sample_weight(data):
    loss = LcronLoss(gt_num=4, stage_k=4)
    task = LcronTask(loss=loss, stage_names=("a", "b"))
    rng = np.random.default_rng(0)
    stages = [rng.normal(size=data["label"].shape).astype(np.float32) for _ in range(2)]
    per_request = loss.per_request(stages, data["label"], data["mask"]).numpy()
    got = task(data["label"], np.stack(stages, 1), data["mask"]).numpy()
    assert got == pytest.approx(per_request.mean(), rel=1e-6)
    w = rng.uniform(size=len(per_request)).astype(np.float32)
    got_w = task(data["label"], stages, data["mask"], sample_weight=w[:, None]).numpy()
    assert got_w == pytest.approx((w * per_request).sum() / len(w), rel=1e-6)
    # Without a mask, label < 0 marks padded slots.
    y = np.where(data["mask"] > 0, data["label"], -1.0)
    assert task(y, stages).numpy() == pytest.approx(per_request.mean(), rel=1e-6)


def test_compute_metrics_false_and_plugged_loss(data):
    metric = JointRecall(k=4, quotas=(12, 8))
    task = LcronTask(loss=StageTopKLoss(gt_num=4, stage_k=4), metrics=[metric])
    assert task.term_metrics == {} and task.loss_weighting is None
    stages = np.random.default_rng(2).normal(size=(2,) + data["label"].shape).astype(np.float32)
    loss = task(data["label"], list(stages), data["mask"], compute_metrics=False)
    expected = StageTopKLoss(gt_num=4, stage_k=4).per_request(list(stages), data["label"],
                                                              data["mask"])
    assert loss.numpy() == pytest.approx(np.mean(expected.numpy()), rel=1e-6)
    assert metric.count.numpy() == 0
    task(data["label"], list(stages), data["mask"])
    assert metric.count.numpy() == len(data["label"])


def test_config_round_trip_and_errors():
    task = LcronTask(
        loss=LcronLoss(gt_num=4, stage_k=4, tau=20.0),
        metrics=[JointRecall(k=4, quotas=(12, 8))],
        stage_names=("retrieval", "ranking"),
        name="my_task",
    )
    clone = LcronTask.from_config(task.get_config())
    assert clone.get_config() == task.get_config()
    assert clone.loss.tau == 20.0 and clone.task_metrics[0].quotas == (12, 8)
    with pytest.raises(ValueError, match="`loss`"):
        LcronTask(loss=keras.losses.MeanSquaredError())
    with pytest.raises(ValueError, match="`stage_names`"):
        LcronTask(stage_names=("a", "a"))
