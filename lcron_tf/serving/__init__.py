"""Serving: TF Serving SavedModel export and a TF Serving client.

* :func:`export` writes ``<base_dir>/<model_name>/<version>/`` atomically, with the
  ``serving_default`` (whole cascade), ``score_<stage>``, ``query_embedding`` and ``retrieve``
  signatures (see :mod:`lcron_tf.serving.export` for their shapes and dtypes);
  :func:`lcron_tf.serving.versioned.write_version` is its atomic versioned write, for any
  exporter.
* :func:`~lcron_tf.serving.tfrs_export.export_tfrs` exports ANY ``tfrs.Model`` cascade from
  its own input signature (strings in, your ids out; ``recommend`` over a corpus).
* :class:`Client` talks to TF Serving over gRPC (``PredictionService``) or REST.

An in-process stand-in for TF Serving, for tests only, is
:mod:`lcron_tf.testing.serving_standin`.
"""

from lcron_tf.serving.client import (
    Client,
    InvalidInputError,
    ModelNotFoundError,
    ServingError,
    ServingTimeoutError,
    ServingUnavailableError,
)
from lcron_tf.serving.export import (
    DEFAULT_BASE_DIR,
    DEFAULT_MAX_BATCH_SIZE,
    CascadeServingModule,
    cascade_select,
    export,
    sample_request,
)
from lcron_tf.serving.tfrs_export import TfrsServingModule, export_tfrs

__all__ = [
    "DEFAULT_BASE_DIR",
    "DEFAULT_MAX_BATCH_SIZE",
    "CascadeServingModule",
    "Client",
    "InvalidInputError",
    "ModelNotFoundError",
    "ServingError",
    "ServingTimeoutError",
    "ServingUnavailableError",
    "TfrsServingModule",
    "cascade_select",
    "export",
    "export_tfrs",
    "sample_request",
]
