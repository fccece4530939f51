"""A small client for TensorFlow Serving's gRPC ``PredictionService`` and REST predict API.

Works against a real ``tensorflow_model_server`` (``tensorflow/serving`` Docker image) and
against the test stand-in :mod:`lcron_tf.testing.serving_standin`::

    from lcron_tf.serving import Client

    client = Client("localhost:8500", "lcron", protocol="grpc", timeout=5.0, retries=3)
    out = client.predict({"user_id": ..., "user_features": ..., "history": ...,
                          "item_id": ..., "item_features": ..., "mask": ...})
    out["selected_indices"]  # int32 [B, K]

    rest = Client("http://localhost:8501", "lcron", protocol="rest")

Errors are mapped to exceptions that say what went wrong:

==========================  ============================  =====================================
exception                   gRPC status                   REST status
==========================  ============================  =====================================
:class:`ModelNotFoundError`  ``NOT_FOUND``                 404
:class:`InvalidInputError`   ``INVALID_ARGUMENT``,         400 (and client-side input checks)
                             ``FAILED_PRECONDITION``
:class:`ServingUnavailableError` ``UNAVAILABLE`` after     503 / connection refused after
                             ``retries`` retries           ``retries`` retries
:class:`ServingTimeoutError` ``DEADLINE_EXCEEDED``         socket timeout
:class:`ServingError`        anything else                 anything else
==========================  ============================  =====================================

Only ``UNAVAILABLE`` (server starting, model loading, connection refused) is retried,
with exponential backoff; a predict is idempotent, so a retry is safe.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar

import numpy as np

from lcron_tf._keras import tf

__all__ = [
    "Client",
    "InvalidInputError",
    "ModelNotFoundError",
    "ServingError",
    "ServingTimeoutError",
    "ServingUnavailableError",
]

# Canonical dtypes of the lcron serving inputs (lcron_tf.schema minus labels). The
# client casts same-kind arrays (e.g. float64 mask, int32 ids) to them so that numpy
# defaults do not trip TF Serving's strict dtype check.
INPUT_DTYPES: dict[str, np.dtype] = {
    "user_id": np.dtype(np.int64),
    "user_features": np.dtype(np.int64),
    "history": np.dtype(np.int64),
    "item_id": np.dtype(np.int64),
    "item_features": np.dtype(np.int64),
    "mask": np.dtype(np.float32),
}

_T = TypeVar("_T")


class ServingError(RuntimeError):
    """A predict call failed. ``code`` is the gRPC status name (or ``HTTP <status>``)."""

    def __init__(self, message: str, *, code: str = "UNKNOWN") -> None:
        super().__init__(message)
        self.code = code


class ModelNotFoundError(ServingError):
    """The server has no such model, or not the requested version (NOT_FOUND / HTTP 404)."""


class InvalidInputError(ServingError, ValueError):
    """The request was rejected: missing input, wrong shape/dtype, unknown signature, or the
    model's in-graph validation failed (INVALID_ARGUMENT / FAILED_PRECONDITION / HTTP 400)."""


class ServingUnavailableError(ServingError):
    """The server stayed unreachable or UNAVAILABLE after every retry."""


class ServingTimeoutError(ServingError, TimeoutError):
    """The call exceeded ``timeout`` (DEADLINE_EXCEEDED / socket timeout)."""


def _error_for(code: str, message: str) -> ServingError:
    if code in ("NOT_FOUND", "HTTP 404"):
        return ModelNotFoundError(message, code=code)
    if code in ("INVALID_ARGUMENT", "FAILED_PRECONDITION", "HTTP 400"):
        return InvalidInputError(message, code=code)
    if code in ("DEADLINE_EXCEEDED", "HTTP 504"):
        return ServingTimeoutError(message, code=code)
    if code in ("UNAVAILABLE", "HTTP 503"):
        return ServingUnavailableError(message, code=code)
    return ServingError(message, code=code)


class _RetryableError(Exception):
    """Internal: the attempt failed with a retryable error."""

    def __init__(self, error: ServingError) -> None:
        super().__init__(str(error))
        self.error = error


class Client:
    """TF Serving client (gRPC ``PredictionService`` or REST ``:predict``).

    Args:
      target: gRPC ``"host:port"`` (default port 8500), or for REST ``"http://host:port"``
        (``"host:port"`` is accepted too; default port 8501).
      model_name: the served model name (``MODEL_NAME`` / ``--model_name``).
      protocol: ``"grpc"`` or ``"rest"``.
      version: serve this integer version; ``None`` = the server's default (latest).
      timeout: seconds per attempt (gRPC deadline / socket timeout).
      retries: how many times an ``UNAVAILABLE`` attempt is retried (0 = no retry).
      backoff: first retry delay in seconds; doubles each retry, capped at ``max_backoff``.
      max_backoff: cap of the retry delay in seconds.
      cast_inputs: cast the known lcron inputs (``user_id``, ``mask``, ...) to their
        serving dtype when only the width differs (float64 -> float32, int32 -> int64).
    """

    def __init__(
        self,
        target: str,
        model_name: str,
        *,
        protocol: Literal["grpc", "rest"] = "grpc",
        version: int | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.1,
        max_backoff: float = 2.0,
        cast_inputs: bool = True,
    ) -> None:
        if protocol not in ("grpc", "rest"):
            raise ValueError(f"`protocol` must be 'grpc' or 'rest'. Received: {protocol!r}")
        if not model_name:
            raise ValueError("`model_name` must be a non-empty string")
        if version is not None and (not isinstance(version, int | np.integer) or version < 0):
            raise ValueError(f"`version` must be None or an int >= 0. Received: {version!r}")
        if timeout <= 0:
            raise ValueError(f"`timeout` must be > 0. Received: {timeout!r}")
        if retries < 0:
            raise ValueError(f"`retries` must be >= 0. Received: {retries!r}")
        self.target = target
        self.model_name = model_name
        self.protocol = protocol
        self.version = None if version is None else int(version)
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.cast_inputs = cast_inputs
        self._channel: Any = None
        self._stub: Any = None
        self._metadata: dict[str, dict[str, Any]] | None = None
        if protocol == "grpc":
            import grpc
            from tensorflow_serving.apis import prediction_service_pb2_grpc

            self._grpc = grpc
            self._channel = grpc.insecure_channel(
                target,
                options=[
                    ("grpc.max_send_message_length", 256 << 20),
                    ("grpc.max_receive_message_length", 256 << 20),
                ],
            )
            self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        else:
            base = target if "://" in target else f"http://{target}"
            self._rest_base = base.rstrip("/")

    # ------------------------------------------------------------------ public API

    def predict(
        self,
        inputs: Mapping[str, np.ndarray | Sequence[Any]],
        signature: str = "serving_default",
        *,
        output_filter: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        """Run one predict request.

        Args:
          inputs: input name -> array (anything ``np.asarray`` accepts). Every serving input of
            the signature must be present; see :mod:`lcron_tf.serving.export` for the
            lcron signatures' names, shapes and dtypes.
          signature: the signature name (``"serving_default"``, ``"score_<stage>"``,
            ``"query_embedding"``, ``"retrieve"``).
          output_filter: only return these outputs (gRPC sends it to the server; REST filters
            on the client).

        Returns:
          output name -> ``np.ndarray`` (REST outputs are cast to the signature's dtypes).

        Raises:
          InvalidInputError: bad input (client-side check or server INVALID_ARGUMENT).
          ModelNotFoundError: unknown model or version.
          ServingUnavailableError: still unavailable after ``retries`` retries.
          ServingTimeoutError: an attempt exceeded ``timeout``.
        """
        arrays = self._prepare(inputs)
        if self.protocol == "grpc":
            return self._with_retries(lambda: self._grpc_predict(arrays, signature, output_filter))
        outputs = self._with_retries(lambda: self._rest_predict(arrays, signature))
        if output_filter is not None:
            missing = sorted(set(output_filter) - set(outputs))
            if missing:
                raise InvalidInputError(
                    f"output_filter names unknown outputs {missing}; "
                    f"signature {signature!r} has {sorted(outputs)}",
                    code="CLIENT",
                )
            outputs = {k: outputs[k] for k in output_filter}
        return outputs

    def signatures(self) -> dict[str, dict[str, Any]]:
        """The served signatures: name -> ``{"inputs": {name: {dtype, shape}}, "outputs": ...}``.

        Uses gRPC ``GetModelMetadata`` or REST ``GET /v1/models/<name>[/versions/<v>]/metadata``.
        """
        if self._metadata is None:
            if self.protocol == "grpc":
                self._metadata = self._with_retries(self._grpc_metadata)
            else:
                self._metadata = self._with_retries(self._rest_metadata)
        return self._metadata

    def close(self) -> None:
        """Close the gRPC channel (no-op for REST)."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None
            self._stub = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Client(target={self.target!r}, model_name={self.model_name!r}, "
            f"protocol={self.protocol!r}, version={self.version!r})"
        )

    # ------------------------------------------------------------------ helpers

    def _prepare(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        if not isinstance(inputs, Mapping) or not inputs:
            raise InvalidInputError(
                "`inputs` must be a non-empty dict of input name -> array", code="CLIENT"
            )
        arrays: dict[str, np.ndarray] = {}
        for name, value in inputs.items():
            try:
                arr = np.asarray(value)
            except Exception as err:  # noqa: BLE001 - any conversion failure is a bad input
                raise InvalidInputError(
                    f"input {name!r} is ragged or not numeric; send a dense, padded array "
                    f"({err})",
                    code="CLIENT",
                ) from err
            if arr.dtype == object:
                raise InvalidInputError(
                    f"input {name!r} is ragged or has mixed types (shape {arr.shape}); "
                    "send a dense, padded array",
                    code="CLIENT",
                )
            want = INPUT_DTYPES.get(name)
            if self.cast_inputs and want is not None and arr.dtype != want:
                if arr.dtype.kind == want.kind or (want.kind == "f" and arr.dtype.kind in "iub"):
                    arr = arr.astype(want)
            arrays[name] = arr
        return arrays

    def _with_retries(self, attempt: Callable[[], _T]) -> _T:
        delay = self.backoff
        last: ServingError | None = None
        for i in range(self.retries + 1):
            try:
                return attempt()
            except _RetryableError as retry:
                last = retry.error
                if i < self.retries:
                    time.sleep(delay)
                    delay = min(delay * 2.0, self.max_backoff)
        assert last is not None
        raise ServingUnavailableError(
            f"{self.protocol} server at {self.target!r} unavailable after "
            f"{self.retries + 1} attempt(s): {last}",
            code=last.code,
        ) from last

    def _model_path(self) -> str:
        path = f"/v1/models/{self.model_name}"
        if self.version is not None:
            path += f"/versions/{self.version}"
        return path

    # ----- gRPC

    def _model_spec(self, request: Any, signature: str | None) -> None:
        request.model_spec.name = self.model_name
        if signature is not None:
            request.model_spec.signature_name = signature
        if self.version is not None:
            request.model_spec.version.value = self.version

    def _grpc_call(self, method: Callable[..., _T], request: Any) -> _T:
        grpc = self._grpc
        if self._stub is None:
            raise ServingError("the client is closed", code="CLIENT")
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as err:
            code = err.code()
            name = code.name if code is not None else "UNKNOWN"
            msg = f"{name}: {err.details()} (model {self.model_name!r}, target {self.target!r})"
            if code == grpc.StatusCode.UNAVAILABLE:
                raise _RetryableError(ServingUnavailableError(msg, code=name)) from err
            raise _error_for(name, msg) from err

    def _grpc_predict(
        self, arrays: Mapping[str, np.ndarray], signature: str, output_filter: Sequence[str] | None
    ) -> dict[str, np.ndarray]:
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        self._model_spec(request, signature)
        for name, arr in arrays.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(arr))
        if output_filter:
            request.output_filter.extend(output_filter)
        response = self._grpc_call(self._stub.Predict, request)
        return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}

    def _grpc_metadata(self) -> dict[str, dict[str, Any]]:
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest()
        self._model_spec(request, None)
        request.metadata_field.append("signature_def")
        response = self._grpc_call(self._stub.GetModelMetadata, request)
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(sig_map)
        return {
            name: {
                "inputs": {k: _tensor_info(v) for k, v in sig.inputs.items()},
                "outputs": {k: _tensor_info(v) for k, v in sig.outputs.items()},
            }
            for name, sig in sig_map.signature_def.items()
        }

    # ----- REST

    def _rest_request(self, method: str, path: str, body: Any | None = None) -> Any:
        url = self._rest_base + path
        data = None if body is None else json.dumps(body).encode("utf-8")
        req = urllib.request.Request(
            url, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read().decode("utf-8"))
        except urllib.error.HTTPError as err:
            raw = err.read().decode("utf-8", "replace")
            try:
                detail = json.loads(raw).get("error", raw)
            except (ValueError, AttributeError):
                detail = raw
            code = f"HTTP {err.code}"
            msg = f"{code}: {detail} (model {self.model_name!r}, {method} {url})"
            if err.code == 503:
                raise _RetryableError(ServingUnavailableError(msg, code=code)) from err
            raise _error_for(code, msg) from err
        except TimeoutError as err:
            raise ServingTimeoutError(
                f"REST {method} {url} exceeded timeout={self.timeout}s", code="DEADLINE_EXCEEDED"
            ) from err
        except urllib.error.URLError as err:
            if isinstance(err.reason, TimeoutError | socket.timeout):
                raise ServingTimeoutError(
                    f"REST {method} {url} exceeded timeout={self.timeout}s",
                    code="DEADLINE_EXCEEDED",
                ) from err
            raise _RetryableError(
                ServingUnavailableError(f"cannot reach {url}: {err.reason}", code="UNAVAILABLE")
            ) from err
        except ConnectionError as err:
            raise _RetryableError(
                ServingUnavailableError(f"cannot reach {url}: {err}", code="UNAVAILABLE")
            ) from err

    def _rest_predict(
        self, arrays: Mapping[str, np.ndarray], signature: str
    ) -> dict[str, np.ndarray]:
        body = {
            "signature_name": signature,
            "inputs": {name: arr.tolist() for name, arr in arrays.items()},
        }
        response = self._rest_request("POST", self._model_path() + ":predict", body)
        if "outputs" not in response:
            raise ServingError(f"unexpected REST response keys {sorted(response)}", code="CLIENT")
        outputs = response["outputs"]
        try:
            specs = self.signatures().get(signature, {}).get("outputs", {})
        except ServingError:  # no metadata endpoint: keep the JSON types
            specs = {}
        if not isinstance(outputs, dict) or (len(specs) == 1 and set(outputs) != set(specs)):
            # TF Serving drops the name when a signature has a single output.
            outputs = {next(iter(specs), "output_0"): outputs}
        result: dict[str, np.ndarray] = {}
        for name, value in outputs.items():
            dtype = specs.get(name, {}).get("dtype")
            result[name] = np.asarray(value, dtype=_NP_DTYPES.get(dtype))
        return result

    def _rest_metadata(self) -> dict[str, dict[str, Any]]:
        response = self._rest_request("GET", self._model_path() + "/metadata")
        sig_defs = response.get("metadata", {}).get("signature_def", {}).get("signature_def", {})
        return {
            name: {
                "inputs": {k: _json_tensor_info(v) for k, v in sig.get("inputs", {}).items()},
                "outputs": {k: _json_tensor_info(v) for k, v in sig.get("outputs", {}).items()},
            }
            for name, sig in sig_defs.items()
        }


_NP_DTYPES: dict[str | None, Any] = {
    "DT_FLOAT": np.float32,
    "DT_DOUBLE": np.float64,
    "DT_INT32": np.int32,
    "DT_INT64": np.int64,
    "DT_BOOL": np.bool_,
    None: None,
}


def _tensor_info(info: Any) -> dict[str, Any]:
    dims = None if info.tensor_shape.unknown_rank else [d.size for d in info.tensor_shape.dim]
    return {"dtype": _dt_name(info.dtype), "shape": dims}


def _dt_name(enum: int) -> str:
    from tensorflow.core.framework import types_pb2

    return types_pb2.DataType.Name(enum)


def _json_tensor_info(info: Mapping[str, Any]) -> dict[str, Any]:
    shape = info.get("tensor_shape", {})
    dims = None if shape.get("unknown_rank") else [int(d["size"]) for d in shape.get("dim", [])]
    return {"dtype": info.get("dtype"), "shape": dims}
