"""Shared pytest set-up.

The two Keras flavours of lcron_tf never share a process, so ``make test`` runs the suite
twice: the Keras 2 (tf_keras / TFRS) suite, which is everything but ``tests/keras3``, and
``tests/keras3`` alone with ``LCRON_TEST_FLAVOUR=keras3``. Either way the flavour is
imported here, before any test module imports TensorFlow.
"""

import os

FLAVOUR = os.environ.get("LCRON_TEST_FLAVOUR", "keras2")
if FLAVOUR == "keras3":
    import lcron_tf.keras3  # noqa: F401  (a Keras 3 process: nothing binds Keras 2)

    collect_ignore_glob = [
        f"{d}/*" for d in ("baselines", "cli", "data", "losses", "models", "ops", "serving")
    ]
else:
    import lcron_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS=1 before TensorFlow is imported)

    collect_ignore_glob = ["keras3/*"]
