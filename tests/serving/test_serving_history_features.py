"""Serving a paper-preset model whose schema has ``history_features`` (the simulator's)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from lcron_tf._keras import tf
from lcron_tf.data.simulator import SimulatorConfig, simulator_schema
from lcron_tf.models import CascadeModel
from lcron_tf.serving.export import export, sample_request, serving_keys

SCHEMA = dataclasses.replace(
    simulator_schema(SimulatorConfig(num_users=50, num_items=800, history_length=5)),
    list_size=12, quotas=(6, 3), gt_num=2, stage_groups=("pos", "neg"),
)


def _feed(batch):
    return {k: tf.constant(v) for k, v in batch.items()}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tf.keras.utils.set_random_seed(0)
    model = CascadeModel.default(SCHEMA, 2, retrieval_units=(8,), ranker_units=(8,),
                                 attention_units=4)
    model(_feed(sample_request(SCHEMA, 2)), training=False)
    path = export(model, tmp_path_factory.mktemp("export"), warmup=False)
    return model, tf.saved_model.load(str(path))


def test_signatures_take_history_features(served):
    model, loaded = served
    assert serving_keys(SCHEMA)[-1] == "history_features"
    assert serving_keys(SCHEMA, user_only=True) == (
        "user_id", "user_features", "history", "history_features")
    request = sample_request(SCHEMA, 3, seed=4)
    assert request["history_features"].shape == (3, 5, 4)
    out = loaded.signatures["serving_default"](**_feed(request))
    want = model(_feed(request), training=False).numpy()
    np.testing.assert_allclose(out["stage_scores"].numpy(), want, rtol=1e-5, atol=1e-6)
    # The history fields matter: other values, other DIN scores.
    other = dict(request, history_features=request["history_features"] % 3 + 1)
    other["history_features"] *= (request["history"] > 0)[..., None]
    changed = loaded.signatures["score_ranking"](**_feed(other))["scores"].numpy()
    assert np.abs(changed - want[:, 1]).max() > 1e-6
    user = {k: tf.constant(request[k]) for k in serving_keys(SCHEMA, user_only=True)}
    q = loaded.signatures["query_embedding"](**user)["query_embedding"].numpy()
    np.testing.assert_allclose(q, model.stage_models[0].query_embedding(user).numpy(),
                               rtol=1e-5, atol=1e-6)


def test_history_features_are_validated_in_graph(served):
    _, loaded = served
    request = sample_request(SCHEMA, 2)
    bad = dict(request, history_features=request["history_features"].copy())
    bad["history_features"][0, -1, 2] = SCHEMA.history_feature_vocabs[2]
    with pytest.raises(tf.errors.InvalidArgumentError, match="`history_features` has ids"):
        loaded.signatures["serving_default"](**_feed(bad))
    short = dict(request, history_features=request["history_features"][:, :, :2])
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError, TypeError)):
        loaded.signatures["serving_default"](**_feed(short))
