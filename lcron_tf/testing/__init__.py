"""Test helpers of lcron_tf. **For tests and local demos only**: nothing here is part of the
library's serving or training path, and nothing here is hardened for production traffic.

* :mod:`lcron_tf.testing.serving_standin` - an in-process stand-in for TF Serving's gRPC and
  REST APIs (on top of ``tf.saved_model.load``), used by the serving tests and
  ``examples/serve_tf_serving.py`` where no ``tensorflow_model_server`` binary exists.

Import the module explicitly (``from lcron_tf.testing.serving_standin import
ServingStandIn``); this package imports nothing itself.
"""
