"""Shared pytest set-up: bind tf.keras to Keras 2 before any test module touches TF."""

import lcron_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS=1 first)
