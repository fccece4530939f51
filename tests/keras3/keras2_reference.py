"""Run in a separate (Keras 2) process: every loss and metric of the Keras 2 flavour on the
inputs of ``flavour_inputs``, printed as JSON (values and gradients), for the parity test."""

import json
import sys

import numpy as np
import tensorflow as tf
from flavour_cases import LOSS_CASES, METRIC_CASES, inputs

from lcron_tf import losses, metrics

logits, labels, mask = inputs()
out = {}
for key, (name, kwargs) in LOSS_CASES.items():
    loss = losses.get(name, **kwargs)
    xs = tf.Variable(np.stack(logits, axis=1))
    with tf.GradientTape() as tape:
        value = loss({"labels": labels, "mask": mask}, xs)
    out[key] = [float(value), tape.gradient(value, xs).numpy().tolist()]
for key, (cls, kwargs) in METRIC_CASES.items():
    m = getattr(metrics, cls)(**kwargs)
    m.update_state(np.where(mask > 0, labels, -1.0), np.stack(logits, axis=1))
    out[key] = float(m.result())
json.dump(out, sys.stdout)
