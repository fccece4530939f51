"""The test stand-in for TF Serving bounds what a client can make it do (real sockets on 127.0.0.1).

Body size refused from `Content-Length` before reading, a read timeout for short bodies and
idle connections, bounded REST threads and gRPC message sizes, and 4xx (never 500) for every
malformed request.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from lcron_tf._keras import tf
from lcron_tf.testing.serving_standin import ServingStandIn

NAME = "tiny"


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("standin_limits") / NAME
    module = tf.Module()
    module.fn = tf.function(
        lambda x: {"doubled": 2.0 * x},
        input_signature=[tf.TensorSpec([None], tf.float32, name="x")],
    )
    tf.saved_model.save(module, str(base / "1"), signatures={"serving_default": module.fn})
    return base


def _port(server: ServingStandIn) -> int:
    return int(server.rest_url.rsplit(":", 1)[1])


def _exchange(port: int, data: bytes, timeout: float = 10.0) -> tuple[int, dict]:
    """Send raw bytes, read one response (headers + Content-Length bytes); (status, JSON)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before reading everything: read the answer
        raw = b""
        while b"\r\n\r\n" not in raw:
            chunk = s.recv(65536)
            assert chunk, f"connection closed without a response: {raw!r}"
            raw += chunk
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        fields = dict(line.split(": ", 1) for line in lines[1:])
        while len(body) < int(fields["Content-Length"]):
            chunk = s.recv(65536)
            assert chunk, "connection closed in the middle of the body"
            body += chunk
    return int(lines[0].split(" ")[1]), json.loads(body or b"{}")


def _post(body: bytes, headers: str | None = None) -> bytes:
    if headers is None:
        headers = f"Content-Length: {len(body)}\r\n"
    return (f"POST /v1/models/{NAME}:predict HTTP/1.1\r\nHost: x\r\n{headers}\r\n").encode() + body


def test_oversized_body_is_refused_before_it_is_read(tiny_repo):
    with ServingStandIn({NAME: tiny_repo}, max_body_bytes=1 << 20, read_timeout=60) as server:
        # 100 MiB announced, nothing sent: if the server tried to read the body it would wait
        # for read_timeout (60 s), far beyond this client's 10 s socket timeout.
        status, body = _exchange(_port(server), _post(b"", "Content-Length: 104857600\r\n"))
        assert status == 413 and "max_body_bytes" in body["error"]
        assert "104857600" in body["error"]


def test_short_body_times_out_with_408_instead_of_blocking_a_thread(tiny_repo):
    with ServingStandIn({NAME: tiny_repo}, read_timeout=0.5, max_threads=1) as server:
        port = _port(server)
        status, body = _exchange(port, _post(b'{"inputs"', "Content-Length: 1000\r\n"))
        assert status == 408 and "1000 bytes" in body["error"]
        # The only handler thread is free again: a proper request succeeds.
        ok = json.dumps({"inputs": {"x": [1.0, 2.0]}}).encode()
        req = urllib.request.Request(f"{server.rest_url}/v1/models/{NAME}:predict", data=ok)
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert json.loads(resp.read()) == {"outputs": [2.0, 4.0]}


MALFORMED = {
    "negative_length": (_post(b"", "Content-Length: -5\r\n"), 400),
    "minus_one_length": (_post(b"{}", "Content-Length: -1\r\n"), 400),
    "text_length": (_post(b"{}", "Content-Length: abc\r\n"), 400),
    "two_lengths": (_post(b"{}", "Content-Length: 2\r\nContent-Length: 3\r\n"), 400),
    "no_length": (_post(b"", ""), 411),
    "chunked": (_post(b"2\r\n{}\r\n0\r\n\r\n", "Transfer-Encoding: chunked\r\n"), 411),
    "not_json": (_post(b"hello"), 400),
    "not_utf8": (_post(b"\xff\xfe\xfd"), 400),
    "deeply_nested_list": (_post(b"[" * 100_000 + b"]" * 100_000), 400),
    "nested_past_64": (_post(b'{"inputs": {"x": ' + b"[" * 70 + b"1" + b"]" * 70 + b"}}"), 400),
    "not_an_object": (_post(b"[1, 2]"), 400),
    "signature_not_a_string": (_post(b'{"signature_name": [1], "inputs": {"x": [1]}}'), 400),
    "null_input": (_post(b'{"inputs": {"x": null}}'), 400),
    "huge_int": (_post(b'{"inputs": {"x": [1' + b"0" * 40 + b"]}}"), 400),
    "both_formats": (_post(b'{"inputs": {"x": [1]}, "instances": [1]}'), 400),
    "bad_path": (b"GET /v1/models/%00/../x HTTP/1.1\r\nHost: x\r\n\r\n", 404),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_requests_get_4xx_never_500(tiny_repo, case):
    data, want = MALFORMED[case]
    with ServingStandIn({NAME: tiny_repo}, read_timeout=2) as server:
        status, body = _exchange(_port(server), data)
        assert status == want, body
        assert "error" in body


def test_rest_threads_are_bounded_and_excess_connections_get_503(tiny_repo):
    with ServingStandIn({NAME: tiny_repo}, max_threads=2, read_timeout=30) as server:
        port = _port(server)
        idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(2)]
        try:
            for s in idle:  # half a request line: both handler threads wait on it
                s.sendall(b"GET /v1/mod")
            time.sleep(0.2)  # let the server accept them
            status, body = _exchange(port, b"GET /v1/models/tiny HTTP/1.1\r\nHost: x\r\n\r\n")
            assert status == 503 and "busy" in body["error"]
        finally:
            for s in idle:
                s.close()
        for _ in range(100):  # the closed connections free their threads
            try:
                with urllib.request.urlopen(f"{server.rest_url}/v1/models/{NAME}",
                                            timeout=10) as resp:
                    assert resp.status == 200
                    break
            except urllib.error.HTTPError as err:
                assert err.code == 503
                time.sleep(0.05)
        else:
            pytest.fail("the stand-in never recovered its threads")


def test_grpc_limits_and_malformed_tensors(tiny_repo):
    with ServingStandIn({NAME: tiny_repo}, rest_port=None, max_body_bytes=1 << 20) as server:
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            big = predict_pb2.PredictRequest()
            big.model_spec.name = NAME
            big.inputs["x"].CopyFrom(tf.make_tensor_proto(np.zeros(400_000, np.float32)))
            with pytest.raises(grpc.RpcError) as info:
                stub.Predict(big, timeout=30)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

            bad = predict_pb2.PredictRequest()
            bad.model_spec.name = NAME
            bad.inputs["x"].CopyFrom(tensor_pb2.TensorProto(
                dtype=types_pb2.DT_FLOAT, tensor_content=b"\x00\x01\x02",
                tensor_shape={"dim": [{"size": 5}]}))
            with pytest.raises(grpc.RpcError) as info:
                stub.Predict(bad, timeout=30)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "'x'" in info.value.details()

            good = predict_pb2.PredictRequest()
            good.model_spec.name = NAME
            good.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones(3, np.float32)))
            out = stub.Predict(good, timeout=30)
            np.testing.assert_array_equal(tf.make_ndarray(out.outputs["doubled"]), [2, 2, 2])
