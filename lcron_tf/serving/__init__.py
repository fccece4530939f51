"""Serving: TF Serving SavedModel export, a TF Serving client, and a test stand-in server.

* :func:`export` writes ``<base_dir>/<model_name>/<version>/`` atomically, with the
  ``serving_default`` (whole cascade), ``score_<stage>``, ``query_embedding`` and ``retrieve``
  signatures (see :mod:`lcron_tf.serving.export` for their shapes and dtypes).
* :class:`Client` talks to TF Serving over gRPC (``PredictionService``) or REST.
* :mod:`lcron_tf.serving.standin` is an in-process stand-in for TF Serving, for tests only.
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
    CascadeServingModule,
    cascade_select,
    export,
    sample_request,
)

__all__ = [
    "DEFAULT_BASE_DIR",
    "CascadeServingModule",
    "Client",
    "InvalidInputError",
    "ModelNotFoundError",
    "ServingError",
    "ServingTimeoutError",
    "ServingUnavailableError",
    "cascade_select",
    "export",
    "sample_request",
]
