"""The Keras-facing behaviour of lcron_tf, written once for both Keras flavours.

Mixins without any Keras import: each flavour (Keras 2 = ``tf_keras`` in
:mod:`lcron_tf.losses` / :mod:`~lcron_tf.metrics` / :mod:`~lcron_tf.layers`; Keras 3 in
:mod:`lcron_tf.keras3`) combines them with its own ``Loss`` / ``Mean`` / ``Layer`` base and
registers the result. Everything that is not a Keras base-class difference lives here:
option parsing (by the ops' options dataclasses), the ``y_true`` / ``y_pred`` conventions,
``get_config``, the learned stage weights, the metric and layer computations.
"""
