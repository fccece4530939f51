"""Moved to :mod:`lcron_tf.schema` (the lowest layer, imported by models, data and serving).

This name is kept for backwards compatibility: ``lcron_tf.data.schema`` *is* the module
:mod:`lcron_tf.schema` (same object), so old imports keep working.
"""

import sys

from lcron_tf import schema as _schema

sys.modules[__name__] = _schema
