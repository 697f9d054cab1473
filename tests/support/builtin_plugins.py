"""Import a built-in plugin module (plugins/<module>.py) in tests.

setup.py installs plugins/ as the package ``gateway.plugins``, but the plugin API module
gateway/plugins.py has the same dotted name; in an editable install the module wins, so
``gateway.plugins.<module>`` cannot be imported. Until that is resolved, fall back to the
checkout's ``plugins.<module>`` (the test run's root directory is on sys.path).
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["load_builtin"]


def load_builtin(module: str) -> ModuleType:
    try:
        return importlib.import_module(f"gateway.plugins.{module}")
    except ModuleNotFoundError as exc:
        if exc.name != f"gateway.plugins.{module}":
            raise
        return importlib.import_module(f"plugins.{module}")
