"""The generic Keras wrapper and the registry: configs, defaults, compatibility."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from lcron_examples import reference_example

import lcron_tf
from lcron_tf._keras import keras
from lcron_tf.losses import registry
from lcron_tf.metrics import JointRecall
from lcron_tf.models import LcronTask
from lcron_tf.schema import TWO_STAGE_GROUPS, CascadeSchema

FIXTURE = Path(__file__).parent / "fixtures" / "configs_v0_1_0.json"


def _y(labels, mask):
    return {"labels": labels, "mask": mask}


@pytest.mark.parametrize("key", sorted(json.loads(FIXTURE.read_text())))
def test_configs_saved_by_version_0_1_0_still_load(key):
    """Serialized by lcron_tf 0.1.0 (before the loss core v2) -> same options, same values."""
    case = json.loads(FIXTURE.read_text())[key]
    obj = keras.utils.deserialize_keras_object(case["serialized"])
    if key == "lcron_task":
        assert isinstance(obj, LcronTask) and obj.stage_names == ["retrieval", "ranking"]
        assert obj.loss.gt_num == 5 and obj.loss.stage_k == 5
        return
    old = case["serialized"]["config"]
    new = obj.get_config()
    for name, value in old.items():  # every 0.1.0 key survives with its value
        assert new[name] == value, name
    logits, labels, mask = reference_example(2)
    fresh = type(obj)(**case["kwargs"])
    stages = [tf.constant(x) for x in logits]
    np.testing.assert_allclose(
        obj.per_request(stages, labels, mask).numpy(),
        fresh.per_request(stages, labels, mask).numpy(),
        rtol=1e-6,
    )


def test_registry_takes_the_dataset_defaults_each_loss_declares():
    schema = CascadeSchema(
        list_size=40, history_length=5, user_vocab=9, item_vocab=9, user_feature_vocabs=(3,),
        item_feature_vocabs=(3,), stage_groups=TWO_STAGE_GROUPS, gt_num=8, quotas=(30, 20),
    )
    lcron = registry.get("lcron", schema=schema)
    assert (lcron.gt_num, lcron.stage_k) == (8, 8)
    assert registry.get("lcron", schema=schema, gt_num=6).stage_k == 6  # stage_k follows gt_num
    assert registry.get("lcron", schema=schema, stage_k=[9, 7]).stage_k == (9, 7)
    assert registry.get("bce", schema=schema).train_tiers == (None, 2)  # RecFlow groups
    assert registry.get("icc", schema=schema, quotas=(25, 15)).quotas == (25, 15)
    assert registry.get("arf_v2", schema=schema).quotas == (30, 20)
    assert registry.get("fs_lambdaloss").quotas is None  # no schema: the class defaults
    with pytest.raises(ValueError, match="stage_k"):
        registry.get("bce", schema=schema, stage_k=3)
    with pytest.raises(ValueError, match="tau"):
        registry.get("arf", tau=float("inf"))
    assert "train_tiers" in registry.option_names("bce")


def test_positional_options_and_attribute_access_are_kept():
    loss = lcron_tf.losses.LcronLoss(5, [6, 5], 20.0, "soft")
    assert (loss.gt_num, loss.stage_k, loss.tau, loss.sort) == (5, (6, 5), 20.0, "soft")
    assert loss.options.mode == "masked"
    with pytest.raises(ValueError, match="positional"):
        lcron_tf.losses.BceLoss(1, 2, 3, 4)
    with pytest.raises(AttributeError):
        _ = loss.no_such_option


def test_a_user_subclass_with_only_per_request_still_plugs_in():
    class Hinge(lcron_tf.losses.CascadeLoss):
        def per_request(self, stage_logits, labels, mask):
            return tf.reduce_mean(tf.nn.relu(1.0 - stage_logits[-1]) * mask, axis=1)

    logits, labels, mask = reference_example(2)
    loss = Hinge()
    assert loss.terms(logits, labels, mask).parts == {}
    task = LcronTask(loss=loss, stage_names=("a", "b"))
    value, terms = task.compute(labels, logits, mask)
    assert np.isfinite(float(value)) and terms.parts == {}
    with pytest.raises(ValueError, match="no options"):
        Hinge(tau=1.0)


def test_task_logs_the_parts_of_any_loss():
    logits, labels, mask = reference_example(2)
    names = ("retrieval", "ranking")
    task = LcronTask(loss=registry.get("arf_v2", quotas=(30, 20)), stage_names=names,
                     metrics=[JointRecall(k=10, quotas=(30, 20))])
    task(labels, logits, mask)
    logged = {m.name: float(m.result()) for m in task.term_metrics.values()}
    assert set(logged) == {f"arf_v2_{p}_{s}" for p in ("relax", "global", "sigma") for s in names}
    assert logged["arf_v2_sigma_ranking"] == pytest.approx(1.0)
    lcron = LcronTask(stage_names=names)
    lcron(labels, logits, mask)
    got = sorted(m.name for m in lcron.term_metrics.values())
    assert got == ["lcron_e2e", "lcron_sigma_ranking", "lcron_sigma_retrieval",
                   "lcron_single_ranking", "lcron_single_retrieval"]
    per_stage = lcron.loss.terms(logits, labels, mask).parts["single/1"]
    assert float(lcron.term_metrics["single/1"].result()) == pytest.approx(
        float(tf.reduce_mean(per_stage)), rel=1e-6
    )


def test_keras_loss_of_an_empty_batch_is_zero():
    for name in registry.names():
        kw = {"gt_num": 2, "stage_k": 2} if name == "lcron" else {"gt_num": 2}
        if "quotas" in registry.option_names(name):
            kw["quotas"] = (3, 2)
        loss = registry.get(name, **kw)
        y = {"labels": tf.zeros([0, 5]), "mask": tf.zeros([0, 5])}
        value = loss(y, tf.zeros([0, 2, 5]))
        assert float(value) == 0.0, name
