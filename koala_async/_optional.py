"""Importing an optional framework, with an error that says which extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require"]


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise an ImportError naming ``pip install 'koala-async[extra]'``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"koala_async.{extra} needs {module.split('.')[0]}: pip install 'koala-async[{extra}]'"
        ) from exc
