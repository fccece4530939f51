"""Optional dependencies: which ``pip install 'lcron_tf[<extra>]'`` brings which package.

The core (``lcron_tf`` losses, models, data builders, export) needs only TensorFlow,
tf-keras, TensorFlow Recommenders, tensorflow-serving-api and numpy. Heavier packages are
imported where they are used, through :func:`require`, which names the extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# module -> (pip package, extra). Declared once; setup.cfg lists the same extras.
EXTRAS = {
    "yaml": ("pyyaml", "cli"),
    "tensorboard": ("tensorboard", "cli"),
    "matplotlib": ("matplotlib", "reports"),
    "pandas": ("pandas", "recflow"),
    "pyarrow": ("pyarrow", "recflow"),
    "torch": ("torch", "test"),
}


def require(module: str, what: str) -> ModuleType:
    """Import ``module`` or raise ``ImportError`` naming the extra that installs it.

    Args:
      module: top-level module name (a key of :data:`EXTRAS`).
      what: the feature that needs it, for the message (e.g. ``"lcron-tf report"``).
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        package, extra = EXTRAS[module.split(".")[0]]
        raise ImportError(
            f"{what} needs the `{package}` package, which is not installed. Install it with "
            f"`pip install 'lcron_tf[{extra}]'` (or `pip install {package}`)."
        ) from err
