"""The Keras 3 flavour (lcron_tf.keras3), in its own pytest process (LCRON_TEST_FLAVOUR=keras3).

Parity with the Keras 2 flavour (computed in a separate Keras 2 process), fit under XLA with
the learned sigmas, .keras save/load, model.export loaded by plain TensorFlow, serialization
and the registry, the backend error and the one-flavour-per-process rule.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from flavour_cases import LOSS_CASES, METRIC_CASES, N, inputs

import lcron_tf.keras3 as k3

keras = pytest.importorskip("keras")
HERE = Path(__file__).parent
REPO = HERE.parent.parent


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env.update(PYTHONPATH=os.pathsep.join([str(REPO), str(HERE)]), **extra)
    return env


def _run(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=_env(**env), timeout=300, cwd=str(REPO))


def test_this_process_uses_keras3_and_never_loaded_keras2():
    assert keras.__version__.startswith("3.")
    assert tf.keras.Model is keras.Model  # tf.keras stayed Keras 3
    assert "lcron_tf._keras" not in sys.modules and "tf_keras" not in sys.modules
    assert "lcron_tf.losses" not in sys.modules and "tensorflow_recommenders" not in sys.modules


@pytest.fixture(scope="module")
def keras2_reference():
    proc = subprocess.run([sys.executable, str(HERE / "keras2_reference.py")], capture_output=True,
                          text=True, env=_env(), timeout=600, cwd=str(HERE))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.mark.parametrize("key", sorted(LOSS_CASES))
def test_losses_equal_the_keras2_flavour_values_and_gradients(key, keras2_reference):
    name, kwargs = LOSS_CASES[key]
    logits, labels, mask = inputs()
    loss = k3.get(name, **kwargs)
    xs = tf.Variable(np.stack(logits, axis=1))
    with tf.GradientTape() as tape:
        value = loss({"labels": labels, "mask": mask}, xs)
    want_value, want_grad = keras2_reference[key]
    np.testing.assert_allclose(float(value), want_value, rtol=1e-6)
    np.testing.assert_allclose(tape.gradient(value, xs).numpy(), want_grad, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("key", sorted(METRIC_CASES))
def test_metrics_equal_the_keras2_flavour(key, keras2_reference):
    cls, kwargs = METRIC_CASES[key]
    logits, labels, mask = inputs()
    metric = getattr(k3, cls)(**kwargs)
    metric.update_state(np.where(mask > 0, labels, -1.0), np.stack(logits, axis=1))
    assert float(metric.result()) == pytest.approx(keras2_reference[key], rel=1e-6)


def _cascade_model(num_items: int = 40, features: int = 6) -> keras.Model:
    """Two stages over candidate features [B, N, F]: a dot-product 'retrieval' and an MLP."""
    cands = keras.Input((N, features), name="candidates")
    user = keras.Input((features,), name="user")
    q = keras.layers.Dense(8, name="query_tower")(user)
    c = keras.layers.Dense(8, name="item_tower")(cands)
    retrieval = keras.layers.Dot(axes=(2, 1))([c, q])  # [B, N]
    rank = keras.layers.Dense(1)(keras.layers.Dense(16, activation="relu")(cands))
    rank = keras.layers.Reshape((N,))(rank)
    scores = keras.layers.Concatenate(axis=1)(
        [keras.layers.Reshape((1, N))(retrieval), keras.layers.Reshape((1, N))(rank)]
    )
    return keras.Model({"candidates": cands, "user": user}, scores)


def _data(num: int = 256, features: int = 6, seed: int = 1):
    rng = np.random.default_rng(seed)
    user = rng.normal(size=(num, features)).astype(np.float32)
    cands = rng.normal(size=(num, N, features)).astype(np.float32)
    rel = np.einsum("bnf,bf->bn", cands, user) + 0.3 * rng.normal(size=(num, N))
    labels = np.argsort(np.argsort(rel, axis=1), axis=1).astype(np.float32)  # 0 .. N-1
    labels[:, -2:] = -1.0  # the last two slots padded
    return {"candidates": cands, "user": user}, labels


def test_fit_under_xla_trains_scores_and_sigmas_then_save_load_export(tmp_path):
    keras.utils.set_random_seed(0)
    x, y = _data()
    model = _cascade_model()
    loss = k3.LcronLoss(gt_num=3, stage_k=3, tau=1.0)
    k3.track_loss_weights(model, loss)
    joint = k3.JointRecall(k=3, quotas=(6, 4), name="joint_recall")
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss=loss, metrics=[joint],
                  jit_compile=True)
    before = model.evaluate(x, y, verbose=0, return_dict=True)
    history = model.fit(x, y, batch_size=32, epochs=6, verbose=0).history
    after = model.evaluate(x, y, verbose=0, return_dict=True)
    assert history["loss"][-1] < 0.8 * history["loss"][0], history["loss"]
    assert after["joint_recall"] > before["joint_recall"] + 0.1, (before, after)
    assert any("log_sigma" in v.path for v in model.trainable_variables)
    assert np.max(np.abs(np.asarray(loss.weighting.log_sigma))) > 1e-3

    path = tmp_path / "cascade.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert isinstance(loaded.loss, k3.LcronLoss)
    assert loaded.loss.get_config() == loss.get_config()

    export_dir = tmp_path / "export" / "1"
    model.export(str(export_dir))
    code = (
        "import sys, numpy as np, tensorflow as tf\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('lcron_tf', 'keras', 'tf_keras'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"m = tf.saved_model.load({str(export_dir)!r})\n"
        "f = m.signatures['serving_default']\n"
        "x = np.load(sys.argv[1])\n"
        "out = f(candidates=tf.constant(x['c']), user=tf.constant(x['u']))\n"
        "print(np.asarray(list(out.values())[0]).tolist())\n"
    )
    np.savez(tmp_path / "x.npz", c=x["candidates"][:3], u=x["user"][:3])
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "x.npz")],
                          capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    served = np.array(json.loads(proc.stdout.strip().splitlines()[-1]))
    want = model.predict({k: v[:3] for k, v in x.items()}, verbose=0)
    np.testing.assert_allclose(served, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted({c[0] for c in LOSS_CASES.values()}))
def test_serialization_round_trip_and_registered_names(name):
    loss = k3.get(name, **dict(LOSS_CASES[name][1]), reduction="sum", name="x")
    config = keras.saving.serialize_keras_object(loss)
    assert config["registered_name"] == f"lcron_tf>{type(loss).__name__}"
    clone = keras.saving.deserialize_keras_object(config)
    assert type(clone) is type(loss) and clone.get_config() == loss.get_config()
    assert clone.reduction == "sum"
    logits, labels, mask = inputs()
    y = {"labels": labels, "mask": mask}
    stacked = np.stack(logits, 1)
    assert float(clone(y, stacked)) == pytest.approx(float(loss(y, stacked)))


def test_metrics_and_layers_serialize_and_compute():
    logits, labels, mask = inputs()
    scores = np.stack(logits, axis=1)
    for obj in (k3.JointRecall(k=3, quotas=(6, 4)), k3.StageRecall(k=3, m=6, stage=0),
                k3.NDCG(k=5, masked=True), k3.CascadeSelection(ks=(6, 4), tau=2.0),
                k3.CascadeTopK(quotas=(6, 4)), k3.UncertaintyWeighting(init_sigma=2.0)):
        config = keras.saving.serialize_keras_object(obj)
        assert config["registered_name"].startswith("lcron_tf>")
        assert keras.saving.deserialize_keras_object(config).get_config() == obj.get_config()
    indices, survival = k3.CascadeTopK(quotas=(6, 4))(scores, mask=mask)
    assert indices.shape == (6, 4) and survival.shape == (6, N)
    assert np.all(np.asarray(survival)[mask == 0] == 0)
    probs = np.asarray(k3.CascadeSelection(ks=(6, 4), tau=2.0)(scores, mask=mask))
    assert np.all(probs[mask == 0] == 0) and np.all((probs >= 0) & (probs <= 1.0 + 1e-6))
    with pytest.raises(ValueError, match="Unknown loss"):
        k3.get("nope")
    with pytest.raises(ValueError, match="tau"):
        k3.LcronLoss(tau=0.0)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_other_backends_raise_an_error_naming_the_supported_one(backend):
    if backend == "torch":
        pytest.importorskip("torch")
    proc = _run("import lcron_tf.keras3", KERAS_BACKEND=backend)
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr and "TensorFlow backend only" in proc.stderr
    assert f"KERAS_BACKEND={backend!r}" in proc.stderr


def test_flavours_refuse_to_share_a_process():
    proc = _run("import lcron_tf.keras3\nimport lcron_tf.losses")
    assert proc.returncode != 0 and "cannot share a process" in proc.stderr
    proc = _run("import lcron_tf.losses\nimport lcron_tf.keras3")
    assert proc.returncode != 0 and "cannot share" in proc.stderr
    ok = _run("import lcron_tf.keras3, tensorflow as tf, keras\n"
              "assert tf.keras.Model is keras.Model\nprint('ok')")
    assert ok.returncode == 0 and "ok" in ok.stdout, ok.stderr[-2000:]
