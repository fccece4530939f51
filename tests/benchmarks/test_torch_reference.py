"""benchmarks/torch_models.py computes what the paper preset computes (same weights, same
scores), so bench_vs_torch.py times the same model on both sides."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs torch (pip install .[parity])")

import lcron_tf  # noqa: E402,F401
from lcron_tf._keras import keras  # noqa: E402
from lcron_tf.data import simulate  # noqa: E402
from lcron_tf.models import CascadeModel  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def copy_weights(tf_model, torch_model) -> None:
    """TF stage weights -> torch, in creation order (Dense kernels transposed)."""
    for tf_stage, th_stage in zip(tf_model.stage_models, torch_model.stages):
        tf_w = [w.numpy() for w in tf_stage.trainable_weights]
        th_p = list(th_stage.parameters())
        assert [w.size for w in tf_w] == [p.numel() for p in th_p]
        with torch.no_grad():
            for w, p in zip(tf_w, th_p):
                p.copy_(torch.from_numpy(w.T.copy() if p.ndim == 2 and p.shape != w.shape
                                         else w))


@pytest.mark.parametrize("num_stages", [2, 3])
def test_torch_cascade_equals_the_paper_preset(num_stages):
    tm = _load("torch_models")
    schema, arrays = simulate(num_requests=16, num_stages=num_stages, num_users=60,
                              num_items=700, history_length=12)
    keras.utils.set_random_seed(0)
    sizes = {"retrieval_units": (16, 8), "pre_ranker_units": (16, 8), "ranker_units": (16, 8),
             "attention_units": 8}
    model = CascadeModel.default(schema, num_stages, metrics=[], **sizes)
    batch = {k: v[:8] for k, v in arrays.items()}
    batch["history"][0] = 0  # an empty history
    batch["history_features"][0] = 0
    want = model(batch).numpy()
    grads = {}
    for attention in ("loop", "split", "concat"):
        ref = tm.TorchCascade(schema, num_stages, attention=attention, **sizes)
        assert sum(p.numel() for p in ref.parameters()) == sum(
            v.shape.num_elements() for v in model.trainable_variables)
        copy_weights(model, ref)
        got = ref(tm.to_torch(batch)).detach().numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        loss = ref.loss(tm.to_torch(batch))
        loss.backward()
        emb = ref.stages[0].embedding.weight.grad.numpy()
        assert np.isfinite(float(loss.detach())) and (emb[0] == 0).all()  # padding: no grad
        grads[attention] = [p.grad.numpy().copy() for p in ref.parameters()]
    for mode in ("split", "concat"):  # the loop's written-out gradient equals autograd's
        for g1, g2 in zip(grads["loop"], grads[mode]):
            np.testing.assert_allclose(g1, g2, rtol=1e-3, atol=1e-5)
