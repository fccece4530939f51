"""Optional dependencies: the ImportError names the extra, and setup.cfg declares it."""

from __future__ import annotations

import configparser
import importlib
from pathlib import Path

import pytest

from lcron_tf import _extras

SETUP = Path(__file__).resolve().parents[1] / "setup.cfg"


def _extras_of_setup_cfg() -> dict[str, list[str]]:
    cfg = configparser.ConfigParser()
    cfg.read(SETUP)
    out = {}
    for extra, value in cfg["options.extras_require"].items():
        out[extra] = [line.split(">")[0].split("=")[0].split("<")[0].strip().lower()
                      for line in value.splitlines() if line.strip()]
    return out


def test_every_optional_package_is_in_the_extra_the_error_names():
    extras = _extras_of_setup_cfg()
    for module, (package, extra) in _extras.EXTRAS.items():
        assert package in extras[extra], (module, package, extra)
        assert package in extras["test"], (module, package)  # the full suite installs all


def test_heavy_packages_are_not_core_requirements():
    cfg = configparser.ConfigParser()
    cfg.read(SETUP)
    core = cfg["options"]["install_requires"].lower()
    for heavy in ("pandas", "pyarrow", "matplotlib", "tensorboard", "torch", "pyyaml"):
        assert heavy not in core, heavy


def test_missing_package_error_names_the_extra(monkeypatch):
    real = importlib.import_module

    def fake(name, *args, **kwargs):
        if name == "matplotlib":
            raise ImportError("No module named 'matplotlib'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(ImportError, match=r"pip install 'lcron_tf\[reports\]'"):
        _extras.require("matplotlib", "lcron-tf report")
