"""``python -m lcron_tf.cli`` = the ``lcron-tf`` console script."""

import sys

from lcron_tf.cli.main import main

sys.exit(main())
