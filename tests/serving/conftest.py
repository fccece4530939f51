"""Fixtures of the serving tests: one small ``CascadeModel`` and one shared export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from serving_helpers import MODEL_NAME, SCHEMA, build_model, corpus

from lcron_tf._keras import tf
from lcron_tf.serving.export import export, sample_request


@pytest.fixture(scope="session")
def toy_model():
    return build_model()


@pytest.fixture(scope="session")
def exported(toy_model, tmp_path_factory) -> Path:
    """One export shared by the tests: ``<base>/lcron_toy/1``, with a retrieval index."""
    base = tmp_path_factory.mktemp("saved_models")
    return export(
        toy_model, base, model_name=MODEL_NAME, candidates=corpus(), retrieval_k=5
    )


@pytest.fixture(scope="session")
def loaded(exported: Path):
    """The shared export, loaded once with ``tf.saved_model.load``."""
    return tf.saved_model.load(str(exported))


@pytest.fixture(scope="session")
def request_batch() -> dict[str, np.ndarray]:
    return sample_request(SCHEMA, 3, seed=11, pad_last=2)
