"""The ``lcron-tf`` command line: train / evaluate / export / predict / report / bench.

Entry point: :func:`lcron_tf.cli.main.main` (console script ``lcron-tf``; also
``python -m lcron_tf.cli``). Configs: :mod:`lcron_tf.cli.config`. Plots: :mod:`lcron_tf.cli.report`.
"""

from lcron_tf.cli.config import Config, ConfigError, load_config

__all__ = ["Config", "ConfigError", "load_config"]
