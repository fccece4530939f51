"""Former name of :mod:`lcron_tf.ops.lcron` (kept: ``lcron_tf.ops.cascade`` *is* that module)."""

import sys

from lcron_tf.ops import lcron as _lcron

sys.modules[__name__] = _lcron
