"""An in-process **stand-in** for TensorFlow Serving, for tests and local demos only.

This is *not* TF Serving, and it is not part of lcron_tf's serving path (it lives in
:mod:`lcron_tf.testing`). No ``tensorflow_model_server`` binary can be installed on the
development machines (it is not on PyPI or Debian, and Docker has no engine there), so
this module imitates the parts of its public API that :class:`lcron_tf.serving.Client`
uses, on top of ``tf.saved_model.load``:

* gRPC ``tensorflow.serving.PredictionService``: ``Predict`` (with ``model_spec.version``,
  ``signature_name``, ``output_filter``) and ``GetModelMetadata`` (``signature_def``), from
  the ``tensorflow-serving-api`` stubs;
* REST: ``POST /v1/models/<name>[/versions/<v>]:predict`` with the row (``"instances"``)
  and columnar (``"inputs"``) formats, ``GET /v1/models/<name>[/versions/<v>]`` (status)
  and ``GET .../metadata``;
* the model layout ``<base>/<name>/<integer version>/`` with TF Serving's default version
  policy (the latest version; others on request), non-integer directories ignored (so an
  in-progress atomic export is invisible);
* TF Serving's status codes: unknown model/version -> ``NOT_FOUND`` (HTTP 404), unknown
  signature -> ``FAILED_PRECONDITION``, bad inputs and failed in-graph assertions ->
  ``INVALID_ARGUMENT`` (HTTP 400).

What it does **not** reproduce: the C++ runtime, batching, model hot-reload policies,
``:classify``/``:regress``, ``_bytes``/b64 tensors, or TF Serving's exact error texts.

Limits (so a test or a stray client cannot exhaust the machine): a request body larger than
``max_body_bytes`` is refused from its ``Content-Length`` before any of it is read (HTTP 413;
gRPC messages are capped at the same size); a client that sends less than it announced, or
nothing, is cut off after ``read_timeout`` seconds (HTTP 408); at most ``max_threads`` REST
connections are handled at once (more get an immediate HTTP 503) and at most
``max_concurrent_rpcs`` gRPC calls (more get ``RESOURCE_EXHAUSTED``). Malformed requests
(missing, negative or non-numeric ``Content-Length``, chunked bodies, non-JSON, JSON nested
deeper than 64 levels) get HTTP 4xx, never 500; 500 is kept for the stand-in's own bugs.

Run it from the command line (the same ports as the Docker image)::

    python -m lcron_tf.testing.serving_standin --model_base_path saved_models/lcron \\
        --model_name lcron --port 8500 --rest_api_port 8501
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import threading
from collections.abc import Mapping
from concurrent import futures
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from lcron_tf._keras import tf

__all__ = ["ModelRepository", "ServingStandIn", "ServingStandInError", "main"]


DEFAULT_MAX_BODY_BYTES = 32 << 20
DEFAULT_READ_TIMEOUT = 10.0
DEFAULT_MAX_THREADS = 8
MAX_JSON_DEPTH = 64


class ServingStandInError(Exception):
    """An error with a gRPC status code (``grpc.StatusCode``) and its HTTP equivalent."""

    HTTP = {
        grpc.StatusCode.NOT_FOUND: 404,
        grpc.StatusCode.INVALID_ARGUMENT: 400,
        grpc.StatusCode.OUT_OF_RANGE: 400,
        grpc.StatusCode.FAILED_PRECONDITION: 400,
        grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
        grpc.StatusCode.UNIMPLEMENTED: 501,
        grpc.StatusCode.UNAVAILABLE: 503,
        grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    }

    def __init__(
        self, code: grpc.StatusCode, message: str, *, http_status: int | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self._http_status = http_status

    @property
    def http_status(self) -> int:
        if self._http_status is not None:
            return self._http_status
        return self.HTTP.get(self.code, 500)


def _status_of(err: tf.errors.OpError) -> grpc.StatusCode:
    """The gRPC status of a TF error (TF's error codes are gRPC's)."""
    for code in grpc.StatusCode:
        if code.value[0] == err.error_code:
            return code
    return grpc.StatusCode.INTERNAL


class _Servable:
    def __init__(self, name: str, version: int, path: str) -> None:
        self.name = name
        self.version = version
        self.path = path
        self.loaded = tf.saved_model.load(path)
        proto = saved_model_pb2.SavedModel()
        with open(os.path.join(path, "saved_model.pb"), "rb") as f:
            proto.ParseFromString(f.read())
        serve = [m for m in proto.meta_graphs if "serve" in m.meta_info_def.tags]
        if not serve:
            raise ServingStandInError(
                grpc.StatusCode.FAILED_PRECONDITION, f"{path} has no 'serve' MetaGraph"
            )
        self.signature_defs = {
            k: v for k, v in serve[0].signature_def.items() if not k.startswith("__")
        }

    def predict(
        self, signature: str, inputs: Mapping[str, np.ndarray], *, convert_dtypes: bool = False
    ) -> dict[str, np.ndarray]:
        """Run ``signature``. gRPC tensors must match the signature's dtypes exactly (as in
        TF Serving); JSON numbers (``convert_dtypes=True``) are converted to them."""
        sig_name = signature or "serving_default"
        if not isinstance(sig_name, str) or sig_name not in self.loaded.signatures:
            raise ServingStandInError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f'Serving signature key "{sig_name}" not found. Available: '
                f"{sorted(self.loaded.signatures)}",
            )
        fn = self.loaded.signatures[sig_name]
        specs: dict[str, tf.TensorSpec] = fn.structured_input_signature[1]
        missing = sorted(set(specs) - set(inputs))
        extra = sorted(set(inputs) - set(specs))
        if missing or extra:
            raise ServingStandInError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"signature {sig_name!r} expects inputs {sorted(specs)}; "
                f"missing {missing}, unexpected {extra}",
            )
        feeds = {}
        for name, spec in specs.items():
            arr = np.asarray(inputs[name])
            if arr.dtype != spec.dtype.as_numpy_dtype:
                numeric = np.dtype(spec.dtype.as_numpy_dtype).kind in "iuf"
                if convert_dtypes and arr.dtype.kind in "iufb" and numeric:
                    # REST/JSON carries no dtype: convert like TF Serving's JSON decoder.
                    arr = arr.astype(spec.dtype.as_numpy_dtype)
                else:
                    raise ServingStandInError(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"input {name!r}: expects {spec.dtype.name} but "
                        f"{tf.as_dtype(arr.dtype).name} is provided",
                    )
            feeds[name] = tf.constant(arr, dtype=spec.dtype)
        try:
            outputs = fn(**feeds)
        except (ValueError, TypeError) as err:
            raise ServingStandInError(grpc.StatusCode.INVALID_ARGUMENT, str(err)) from err
        except tf.errors.OpError as err:
            raise ServingStandInError(_status_of(err), err.message) from err
        return {k: v.numpy() for k, v in outputs.items()}


class ModelRepository:
    """Serves ``<base_dir>/<model_name>/<version>/`` SavedModels (loaded lazily, cached).

    Args:
      models: model name -> ``model_base_path`` (the directory holding integer versions).
    """

    def __init__(self, models: Mapping[str, str | os.PathLike[str]]) -> None:
        self.models = {name: os.fspath(path) for name, path in models.items()}
        self._cache: dict[tuple[str, int], _Servable] = {}
        self._lock = threading.Lock()

    def versions(self, name: str) -> list[int]:
        """The available integer versions of ``name``, ascending."""
        base = self.models.get(name)
        if base is None or not os.path.isdir(base):
            return []
        return sorted(
            int(d)
            for d in os.listdir(base)
            if d.isdigit() and os.path.isfile(os.path.join(base, d, "saved_model.pb"))
        )

    def get(self, name: str, version: int | None = None) -> _Servable:
        """The servable for ``name`` at ``version`` (None = latest); NOT_FOUND otherwise."""
        versions = self.versions(name)
        if name not in self.models or not versions:
            raise ServingStandInError(
                grpc.StatusCode.NOT_FOUND,
                f"Servable not found for request: Latest({name}). Known models: "
                f"{sorted(self.models)}",
            )
        if version is None:
            version = versions[-1]
        elif version not in versions:
            raise ServingStandInError(
                grpc.StatusCode.NOT_FOUND,
                f"Servable not found for request: Specific({name}, {version}). "
                f"Available versions: {versions}",
            )
        key = (name, version)
        with self._lock:
            if key not in self._cache:
                self._cache[key] = _Servable(
                    name, version, os.path.join(self.models[name], str(version))
                )
            return self._cache[key]


# ---------------------------------------------------------------------------- gRPC


class _PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, repo: ModelRepository) -> None:
        self.repo = repo

    def _servable(self, spec: Any) -> _Servable:
        version = spec.version.value if spec.HasField("version") else None
        return self.repo.get(spec.name, version)

    def Predict(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC method name
        try:
            servable = self._servable(request.model_spec)
            inputs = {}
            for k, v in request.inputs.items():
                try:
                    inputs[k] = tf.make_ndarray(v)
                except Exception as err:  # noqa: BLE001 - any malformed TensorProto
                    raise ServingStandInError(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"input {k!r} is not a valid tensor: {err}",
                    ) from err
            outputs = servable.predict(request.model_spec.signature_name, inputs)
            if request.output_filter:
                unknown = sorted(set(request.output_filter) - set(outputs))
                if unknown:
                    raise ServingStandInError(
                        grpc.StatusCode.INVALID_ARGUMENT, f"unknown output_filter {unknown}"
                    )
                outputs = {k: outputs[k] for k in request.output_filter}
        except ServingStandInError as err:
            context.abort(err.code, err.message)
        except Exception as err:  # noqa: BLE001 - a stand-in bug: INTERNAL, keep serving
            context.abort(grpc.StatusCode.INTERNAL, f"{type(err).__name__}: {err}")
        response = predict_pb2.PredictResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = request.model_spec.signature_name or "serving_default"
        for k, v in outputs.items():
            response.outputs[k].CopyFrom(tf.make_tensor_proto(v))
        return response

    def GetModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        try:
            servable = self._servable(request.model_spec)
            if list(request.metadata_field) != ["signature_def"]:
                raise ServingStandInError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "Metadata field signature_def is the only one supported",
                )
        except ServingStandInError as err:
            context.abort(err.code, err.message)
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        for k, v in servable.signature_defs.items():
            sig_map.signature_def[k].CopyFrom(v)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.metadata["signature_def"].Pack(sig_map)
        return response


# ---------------------------------------------------------------------------- REST

_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+))?"
    r"(?P<suffix>:predict|/metadata)?$"
)


def _rest_predict(servable: _Servable, body: Mapping[str, Any]) -> dict[str, Any]:
    signature = body.get("signature_name", "serving_default")
    if not isinstance(signature, str):
        raise ServingStandInError(
            grpc.StatusCode.INVALID_ARGUMENT, '"signature_name" must be a string'
        )
    if ("instances" in body) == ("inputs" in body):
        raise ServingStandInError(
            grpc.StatusCode.INVALID_ARGUMENT,
            'the request must have exactly one of "instances" (row) or "inputs" (columnar)',
        )
    sig = servable.signature_defs.get(signature)
    names = sorted(sig.inputs) if sig is not None else []
    if "inputs" in body:
        raw = body["inputs"]
        if not isinstance(raw, dict):
            if len(names) != 1:
                raise ServingStandInError(
                    grpc.StatusCode.INVALID_ARGUMENT, f"named inputs required: {names}"
                )
            raw = {names[0]: raw}
        inputs = {k: _to_array(k, v) for k, v in raw.items()}
    else:
        instances = body["instances"]
        if not isinstance(instances, list) or not instances:
            raise ServingStandInError(
                grpc.StatusCode.INVALID_ARGUMENT, '"instances" must be a non-empty list'
            )
        if all(isinstance(x, dict) for x in instances):
            keys = set(instances[0])
            if any(set(x) != keys for x in instances):
                raise ServingStandInError(
                    grpc.StatusCode.INVALID_ARGUMENT, "every instance must have the same keys"
                )
            inputs = {k: _to_array(k, [x[k] for x in instances]) for k in keys}
        elif len(names) == 1:
            inputs = {names[0]: _to_array(names[0], instances)}
        else:
            raise ServingStandInError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"instances must be objects keyed by the input names {names}",
            )
    outputs = servable.predict(signature, inputs, convert_dtypes=True)
    if "inputs" in body:
        if len(outputs) == 1:
            return {"outputs": next(iter(outputs.values())).tolist()}
        return {"outputs": {k: v.tolist() for k, v in outputs.items()}}
    batch = {v.shape[0] if v.ndim else -1 for v in outputs.values()}
    if len(batch) != 1 or -1 in batch:
        raise ServingStandInError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "outputs do not share a batch dimension; use the columnar \"inputs\" format",
        )
    if len(outputs) == 1:
        return {"predictions": next(iter(outputs.values())).tolist()}
    n = batch.pop()
    return {"predictions": [{k: v[i].tolist() for k, v in outputs.items()} for i in range(n)]}


def _to_array(name: str, value: Any) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except ValueError as err:
        raise ServingStandInError(
            grpc.StatusCode.INVALID_ARGUMENT, f"input {name!r} is not a dense array: {err}"
        ) from err
    if arr.dtype == object:
        raise ServingStandInError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"input {name!r} is ragged or not numeric; every list must have the same length "
            "and hold numbers",
        )
    return arr


def _json_depth_ok(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``value`` (parsed JSON) nests at most ``limit`` lists/objects deep."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return False
            children = item.values() if isinstance(item, dict) else item
            stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return True


def _content_length(headers: Any, limit: int) -> int:
    """The request body size from the headers; ``ServingStandInError`` (4xx) when bad."""
    bad = grpc.StatusCode.INVALID_ARGUMENT
    if "chunked" in (headers.get("Transfer-Encoding") or "").lower():
        raise ServingStandInError(bad, "chunked request bodies are not supported; send "
                                  "Content-Length", http_status=411)
    values = headers.get_all("Content-Length") or []
    if not values:
        raise ServingStandInError(bad, "a POST needs a Content-Length header", http_status=411)
    if len(set(values)) != 1 or not values[0].strip().isdigit():
        raise ServingStandInError(
            bad, f"Content-Length must be one non-negative integer; got {values!r}"
        )
    length = int(values[0].strip())
    if length > limit:
        raise ServingStandInError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"request body of {length} bytes exceeds the stand-in's limit of {limit} bytes "
            "(max_body_bytes)",
            http_status=413,
        )
    return length


def _make_handler(
    repo: ModelRepository, max_body_bytes: int, read_timeout: float
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = read_timeout  # every socket read (request line, headers, body, keep-alive)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
            pass

        def _send(self, status: int, payload: Mapping[str, Any]) -> None:
            data = json.dumps(payload).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if self.close_connection or status >= 400:
                # After an error the rest of the body may be unread: never parse it as a
                # next request.
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> dict[str, Any]:
            length = _content_length(self.headers, max_body_bytes)
            try:
                raw = self.rfile.read(length)
            except TimeoutError:
                raise ServingStandInError(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"timed out after {read_timeout} s reading a request body of {length} bytes",
                    http_status=408,
                ) from None
            if len(raw) != length:
                raise ServingStandInError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"the body ended after {len(raw)} of the {length} bytes of Content-Length",
                )
            try:
                body = json.loads(raw or b"{}")
            except (ValueError, RecursionError) as err:  # incl. UnicodeDecodeError
                raise ServingStandInError(
                    grpc.StatusCode.INVALID_ARGUMENT, f"JSON parse error: {err}"
                ) from None
            if not _json_depth_ok(body):
                raise ServingStandInError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"JSON nested deeper than {MAX_JSON_DEPTH} levels",
                )
            if not isinstance(body, dict):
                raise ServingStandInError(
                    grpc.StatusCode.INVALID_ARGUMENT, "the body must be a JSON object"
                )
            return body

        def _route(self, method: str) -> None:
            try:
                match = _PATH.match(self.path)
                if match is None:
                    raise ServingStandInError(
                        grpc.StatusCode.NOT_FOUND, f"Malformed request: {method} {self.path}"
                    )
                name, suffix = match["name"], match["suffix"]
                version = None if match["version"] is None else int(match["version"])
                if method == "POST" and suffix == ":predict":
                    body = self._body()
                    self._send(200, _rest_predict(repo.get(name, version), body))
                elif method == "GET" and suffix == "/metadata":
                    servable = repo.get(name, version)
                    sig_map = get_model_metadata_pb2.SignatureDefMap()
                    for k, v in servable.signature_defs.items():
                        sig_map.signature_def[k].CopyFrom(v)
                    self._send(
                        200,
                        {
                            "model_spec": {"name": name, "version": str(servable.version)},
                            "metadata": {
                                "signature_def": json_format.MessageToDict(
                                    sig_map, preserving_proto_field_name=True
                                )
                            },
                        },
                    )
                elif method == "GET" and suffix is None:
                    versions = repo.versions(name)
                    if version is not None:
                        versions = [v for v in versions if v == version]
                    if name not in repo.models or not versions:
                        raise ServingStandInError(
                            grpc.StatusCode.NOT_FOUND,
                            f"Could not find any versions of model {name}",
                        )
                    status = [
                        {
                            "version": str(v),
                            "state": "AVAILABLE",
                            "status": {"error_code": "OK", "error_message": ""},
                        }
                        for v in reversed(versions)
                    ]
                    self._send(200, {"model_version_status": status})
                else:
                    raise ServingStandInError(
                        grpc.StatusCode.NOT_FOUND, f"Malformed request: {method} {self.path}"
                    )
            except ServingStandInError as err:
                self._send(err.http_status, {"error": err.message})
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client left
            except Exception as err:  # noqa: BLE001 - a stand-in bug: report, keep serving
                self._send(500, {"error": f"{type(err).__name__}: {err}"})

        def do_GET(self) -> None:  # noqa: N802 - http.server method name
            self._route("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._route("POST")

    return Handler


class _BoundedHTTPServer(HTTPServer):
    """``HTTPServer`` with one thread per connection, at most ``max_threads`` at once.

    A connection beyond the cap gets an immediate ``503`` (the client retries) instead of a
    new thread or an unbounded queue.
    """

    _BUSY = json.dumps({"error": "the stand-in is busy (max_threads connections)"}).encode()

    def __init__(self, address: tuple[str, int], handler: type, max_threads: int) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(max_threads)

    def process_request(self, request: socket.socket, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            try:
                request.settimeout(1.0)
                request.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                    b"Content-Length: " + str(len(self._BUSY)).encode()
                    + b"\r\nConnection: close\r\n\r\n" + self._BUSY
                )
            except OSError:
                pass
            self.shutdown_request(request)
            return
        threading.Thread(
            target=self._handle, args=(request, client_address), daemon=True
        ).start()

    def _handle(self, request: socket.socket, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:  # noqa: BLE001 - a dropped connection must not print a traceback
            pass
        finally:
            self.shutdown_request(request)
            self._slots.release()


class ServingStandIn:
    """gRPC + REST TF-Serving **stand-in** on 127.0.0.1 (test double, not TF Serving).

    Args:
      models: model name -> ``model_base_path`` (``<base>/<name>``, holding ``<version>/``).
      grpc_port: gRPC port (0 = pick a free one).
      rest_port: REST port (0 = pick a free one; None = no REST server).
      host: bind address; loopback by default.
      max_workers: gRPC worker threads.
      max_body_bytes: largest REST body (refused from its ``Content-Length``, before
        reading) and largest gRPC message.
      read_timeout: seconds a REST connection may take for any read (headers, body, idle
        keep-alive) before it is answered 408 / closed.
      max_threads: REST connections handled at once (more get 503).
      max_concurrent_rpcs: gRPC calls in progress at once (more get ``RESOURCE_EXHAUSTED``;
        default ``4 * max_workers``).

    Use as a context manager; ``grpc_target`` (``"127.0.0.1:<port>"``) and ``rest_url``
    (``"http://127.0.0.1:<port>"``) are set once started.
    """

    def __init__(
        self,
        models: Mapping[str, str | os.PathLike[str]],
        *,
        grpc_port: int = 0,
        rest_port: int | None = 0,
        host: str = "127.0.0.1",
        max_workers: int = 4,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        max_threads: int = DEFAULT_MAX_THREADS,
        max_concurrent_rpcs: int | None = None,
    ) -> None:
        for label, value in (("max_workers", max_workers), ("max_body_bytes", max_body_bytes),
                             ("max_threads", max_threads)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{label}` must be an int >= 1. Received: {value!r}")
        if not read_timeout > 0:
            raise ValueError(f"`read_timeout` must be > 0. Received: {read_timeout!r}")
        self.repo = ModelRepository(models)
        self.host = host
        self._grpc_port = grpc_port
        self._rest_port = rest_port
        self._max_workers = max_workers
        self.max_body_bytes = max_body_bytes
        self.read_timeout = float(read_timeout)
        self.max_threads = max_threads
        self.max_concurrent_rpcs = max_concurrent_rpcs or 4 * max_workers
        self._grpc_server: Any = None
        self._http: _BoundedHTTPServer | None = None
        self._http_thread: threading.Thread | None = None
        self.grpc_target: str | None = None
        self.rest_url: str | None = None

    def start(self) -> ServingStandIn:
        """Load the latest version of every model, then bind and start both servers.

        Loading first (TF Serving loads at start-up too) keeps the first request from paying
        for ``tf.saved_model.load``, which on a busy machine can exceed a client's deadline.
        """
        for name in self.repo.models:
            if self.repo.versions(name):
                self.repo.get(name)
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self._max_workers),
            options=[
                ("grpc.max_send_message_length", 256 << 20),
                ("grpc.max_receive_message_length", self.max_body_bytes),
            ],
            maximum_concurrent_rpcs=self.max_concurrent_rpcs,
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            _PredictionServicer(self.repo), server
        )
        port = server.add_insecure_port(f"{self.host}:{self._grpc_port}")
        if port == 0:
            raise OSError(f"cannot bind gRPC to {self.host}:{self._grpc_port}")
        server.start()
        self._grpc_server = server
        self.grpc_target = f"{self.host}:{port}"
        if self._rest_port is not None:
            handler = _make_handler(self.repo, self.max_body_bytes, self.read_timeout)
            self._http = _BoundedHTTPServer((self.host, self._rest_port), handler,
                                            self.max_threads)
            self._http_thread = threading.Thread(
                target=self._http.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
            )
            self._http_thread.start()
            self.rest_url = f"http://{self.host}:{self._http.server_address[1]}"
        return self

    def stop(self, grace: float = 1.0) -> None:
        """Stop both servers (bounded by ``grace`` seconds for gRPC)."""
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            if self._http_thread is not None:
                self._http_thread.join(timeout=5)
            self._http = None
        if self._grpc_server is not None:
            self._grpc_server.stop(grace).wait(timeout=grace + 5)
            self._grpc_server = None

    def __enter__(self) -> ServingStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """CLI: serve one model like ``tensorflow_model_server`` (stand-in, blocks until Ctrl-C)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_base_path", required=True, help="<base>/<name> directory")
    parser.add_argument("--model_name", required=True)
    parser.add_argument("--port", type=int, default=8500, help="gRPC port")
    parser.add_argument("--rest_api_port", type=int, default=8501)
    parser.add_argument("--max_body_bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    parser.add_argument("--read_timeout", type=float, default=DEFAULT_READ_TIMEOUT)
    parser.add_argument("--max_threads", type=int, default=DEFAULT_MAX_THREADS)
    args = parser.parse_args(argv)
    server = ServingStandIn(
        {args.model_name: args.model_base_path}, grpc_port=args.port, rest_port=args.rest_api_port,
        max_body_bytes=args.max_body_bytes, read_timeout=args.read_timeout,
        max_threads=args.max_threads,
    ).start()
    print(
        f"lcron_tf TF-Serving STAND-IN (not TF Serving): gRPC {server.grpc_target}, "
        f"REST {server.rest_url}, model {args.model_name!r} from {args.model_base_path}",
        flush=True,
    )
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
