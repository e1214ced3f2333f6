"""Importing objects by dotted name."""

from __future__ import annotations

import importlib
from typing import Any


def symbol_by_name(name: str | Any, default_module: str | None = None) -> Any:
    """Import ``'pkg.mod:attr'`` or ``'pkg.mod.attr'``; non-strings are returned as they are."""
    if not isinstance(name, str):
        return name
    if ":" in name:
        module_name, _, attr = name.partition(":")
    elif "." in name:
        module_name, _, attr = name.rpartition(".")
    else:
        module_name, attr = default_module or name, name
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def qualified_name(obj: Any) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"
