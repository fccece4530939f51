"""Client round trips over gRPC and REST, against the TF-Serving *stand-in* on 127.0.0.1.

``lcron_tf.testing.serving_standin`` is a test double for TF Serving (no ``tensorflow_model_server``
can be installed on the dev machines). When ``tensorflow_model_server`` is on PATH, the
last test runs the same client round trip against the real server.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from serving_helpers import MODEL_NAME

from lcron_tf._keras import tf
from lcron_tf.serving import (
    Client,
    InvalidInputError,
    ModelNotFoundError,
    ServingTimeoutError,
    ServingUnavailableError,
)
from lcron_tf.testing.serving_standin import ServingStandIn


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reference(loaded, batch, signature="serving_default"):
    out = loaded.signatures[signature](**{k: tf.constant(v) for k, v in batch.items()})
    return {k: v.numpy() for k, v in out.items()}


@pytest.fixture(scope="module")
def repo(exported: Path, tmp_path_factory) -> Path:
    """``<base>/lcron_toy/{1, 2}``: 1 = the cascade export, 2 = a tiny different model."""
    base = tmp_path_factory.mktemp("served") / MODEL_NAME
    shutil.copytree(exported, base / "1")
    tiny = tf.Module()
    tiny.fn = tf.function(
        lambda x: {"doubled": 2.0 * x},
        input_signature=[tf.TensorSpec([None], tf.float32, name="x")],
    )
    tf.saved_model.save(tiny, str(base / "2"), signatures={"serving_default": tiny.fn})
    (base / ".tmp-3-partial").mkdir()  # an in-progress export: must be invisible
    return base


@pytest.fixture(scope="module")
def server(repo: Path):
    with ServingStandIn({MODEL_NAME: repo}) as srv:
        yield srv


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_round_trip_matches_export(server, loaded, request_batch, protocol):
    target = server.grpc_target if protocol == "grpc" else server.rest_url
    with Client(target, MODEL_NAME, protocol=protocol, version=1, timeout=30) as client:
        # Send numpy defaults (float64 mask): the client casts to the serving dtypes.
        batch = dict(request_batch, mask=request_batch["mask"].astype(np.float64))
        out = client.predict(batch)
        want = _reference(loaded, request_batch)
        assert set(out) == set(want)
        for k, v in want.items():
            assert out[k].dtype == v.dtype, k
            np.testing.assert_allclose(out[k], v, rtol=1e-5, atol=1e-6, err_msg=k)
        user = {k: request_batch[k] for k in ("user_id", "user_features", "history")}
        got = client.predict(user, signature="retrieve", output_filter=["item_ids"])
        assert list(got) == ["item_ids"]
        np.testing.assert_array_equal(
            got["item_ids"], _reference(loaded, user, "retrieve")["item_ids"]
        )
        sigs = client.signatures()
        assert "serving_default" in sigs and "score_ranking" in sigs
        assert sigs["serving_default"]["inputs"]["item_features"]["shape"] == [-1, -1, 2]


def test_grpc_dtypes_are_strict_like_tf_serving(server, request_batch):
    batch = dict(request_batch, mask=request_batch["mask"].astype(np.float64))
    raw = Client(server.grpc_target, MODEL_NAME, version=1, timeout=30, cast_inputs=False)
    with pytest.raises(InvalidInputError, match="expects float32 but float64"):
        raw.predict(batch)
    raw.close()


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_version_selection_and_errors(server, request_batch, protocol):
    target = server.grpc_target if protocol == "grpc" else server.rest_url
    latest = Client(target, MODEL_NAME, protocol=protocol, timeout=30)
    out = latest.predict({"x": np.array([1.0, 2.5], np.float32)})  # latest = version 2
    np.testing.assert_allclose(out["doubled"], [2.0, 5.0])
    with pytest.raises(ModelNotFoundError, match="nope"):
        Client(target, "nope", protocol=protocol).predict({"x": np.ones(2, np.float32)})
    with pytest.raises(ModelNotFoundError, match="9"):
        Client(target, MODEL_NAME, protocol=protocol, version=9).predict({"x": np.ones(2)})
    v1 = Client(target, MODEL_NAME, protocol=protocol, version=1, timeout=30)
    bad = dict(request_batch, item_features=request_batch["item_features"][..., :1])
    with pytest.raises(InvalidInputError, match="item_features"):
        v1.predict(bad)
    too_long = {k: np.concatenate([v] * 2, axis=1) if k in ("item_id", "mask") else v
                for k, v in request_batch.items()}
    too_long["item_features"] = np.concatenate([request_batch["item_features"]] * 2, axis=1)
    with pytest.raises(InvalidInputError, match="at most 12 candidates"):
        v1.predict(too_long)
    with pytest.raises(InvalidInputError, match="missing"):
        v1.predict({"user_id": request_batch["user_id"]})
    with pytest.raises(InvalidInputError, match="signature"):
        v1.predict(request_batch, signature="nope")
    with pytest.raises(InvalidInputError, match="ragged"):
        v1.predict({"item_id": [[1, 2], [3]]})
    latest.close()
    v1.close()


def test_rest_row_format_and_status(server, loaded, request_batch):
    url = f"{server.rest_url}/v1/models/{MODEL_NAME}/versions/1:predict"
    instances = [{k: v[i].tolist() for k, v in request_batch.items()} for i in range(3)]
    body = json.dumps({"signature_name": "score_ranking", "instances": instances}).encode()
    req = urllib.request.Request(url, data=body, method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        preds = json.loads(resp.read())["predictions"]
    want = _reference(loaded, request_batch, "score_ranking")["scores"]
    np.testing.assert_allclose(np.asarray(preds, np.float32), want, rtol=1e-5, atol=1e-6)
    with urllib.request.urlopen(f"{server.rest_url}/v1/models/{MODEL_NAME}", timeout=30) as resp:
        status = json.loads(resp.read())["model_version_status"]
    assert [s["version"] for s in status] == ["2", "1"]
    assert all(s["state"] == "AVAILABLE" for s in status)


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_retries_on_unavailable(repo, protocol):
    port, rest_port = _free_port(), _free_port()
    target = f"127.0.0.1:{port}" if protocol == "grpc" else f"http://127.0.0.1:{rest_port}"
    client = Client(target, MODEL_NAME, protocol=protocol, timeout=5, retries=1, backoff=0.05)
    start = time.monotonic()
    with pytest.raises(ServingUnavailableError, match="2 attempt"):
        client.predict({"x": np.ones(2, np.float32)})
    assert time.monotonic() - start < 15
    client.close()

    # The server comes up while the client is retrying: the call succeeds.
    srv = ServingStandIn({MODEL_NAME: repo}, grpc_port=port, rest_port=rest_port)
    timer = threading.Timer(0.6, srv.start)
    timer.start()
    try:
        client = Client(target, MODEL_NAME, protocol=protocol, timeout=5, retries=8,
                        backoff=0.1, max_backoff=0.5)
        out = client.predict({"x": np.ones(2, np.float32)})
        np.testing.assert_allclose(out["doubled"], [2.0, 2.0])
        client.close()
    finally:
        timer.join(timeout=10)
        srv.stop()


def test_real_tensorflow_model_server(exported, loaded, request_batch, tmp_path):
    binary = shutil.which("tensorflow_model_server")
    if binary is None:
        pytest.skip(
            "tensorflow_model_server is not on PATH (not installable here: no PyPI/Debian "
            "package, no Docker engine); the stand-in tests above cover the client"
        )
    port, rest_port = _free_port(), _free_port()
    base = tmp_path / MODEL_NAME
    shutil.copytree(exported, base / "1")
    proc = subprocess.Popen(
        [binary, f"--port={port}", f"--rest_api_port={rest_port}",
         f"--model_name={MODEL_NAME}", f"--model_base_path={base}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        want = _reference(loaded, request_batch)
        for protocol, target in (("grpc", f"127.0.0.1:{port}"),
                                 ("rest", f"http://127.0.0.1:{rest_port}")):
            client = Client(target, MODEL_NAME, protocol=protocol, timeout=30, retries=20,
                            backoff=0.25, max_backoff=1.0)
            deadline = time.monotonic() + 60
            while True:  # the model loads after the ports open: NOT_FOUND until then
                try:
                    out = client.predict(request_batch)
                    break
                except ModelNotFoundError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            for k, v in want.items():
                np.testing.assert_allclose(out[k], v, rtol=1e-5, atol=1e-6, err_msg=k)
            client.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_timeout_on_silent_server(protocol):
    """A loopback listener that accepts connections but never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        target = f"127.0.0.1:{port}" if protocol == "grpc" else f"http://127.0.0.1:{port}"
        client = Client(target, MODEL_NAME, protocol=protocol, timeout=0.5, retries=1,
                        backoff=0.05)
        start = time.monotonic()
        with pytest.raises(ServingTimeoutError, match="(?i)deadline|timeout"):
            client.predict({"x": np.ones(2, np.float32)})
        assert time.monotonic() - start < 10
        client.close()
