"""Exceptions to and from the wire form ``{"exc_type", "exc_message", "exc_module"}``.

Caraway's own exceptions are written as ``celery.exceptions`` so Celery clients rebuild them,
and ``celery.exceptions`` names are read back as caraway's. A class that cannot be imported
becomes a stand-in class of the same name, so ``get()`` still raises something meaningful.
"""

from __future__ import annotations

import builtins
import importlib
import sys
from typing import Any

from caraway import exceptions as caraway_exceptions
from caraway.serialization import json_dumps

_OWN_MODULES = {"celery.exceptions", "caraway.exceptions", "billiard.exceptions"}
_standins: dict[tuple[str, str], type[BaseException]] = {}


def exception_to_meta(exc: BaseException) -> dict[str, Any]:
    cls = type(exc)
    module = cls.__module__
    if module == caraway_exceptions.__name__:
        module = caraway_exceptions.WIRE_MODULE
    return {"exc_type": cls.__qualname__, "exc_message": _args(exc), "exc_module": module}


def _args(exc: BaseException) -> list[Any]:
    # An exception that keeps its text outside ``args`` (pydantic's ValidationError) would
    # otherwise reach the caller with no message at all.
    args = list(exc.args) or ([text] if (text := _text(exc)) else [])
    try:
        json_dumps(args)
    except Exception:
        return [repr(arg) for arg in args]
    return args


def _text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return ""


def meta_to_exception(meta: Any) -> BaseException:
    """Rebuild an exception from its wire form (or pass an exception through)."""
    if isinstance(meta, BaseException):
        return meta
    if not isinstance(meta, dict) or "exc_type" not in meta:
        return Exception(meta)
    name = str(meta["exc_type"])
    module = str(meta.get("exc_module") or "builtins")
    message = meta.get("exc_message") or []
    args = tuple(message) if isinstance(message, list | tuple) else (message,)
    cls = _find_class(module, name)
    try:
        return cls(*args)
    except Exception:
        pass
    try:
        exc = cls.__new__(cls)
        exc.args = args
        return exc
    except Exception:  # a class built only by its library (pydantic's ValidationError)
        return _standin(module, name)(*args)


def _find_class(module: str, name: str) -> type[BaseException]:
    found: Any = None
    if module in _OWN_MODULES:
        found = getattr(caraway_exceptions, name, None)
    elif module == "builtins":
        found = getattr(builtins, name, None)
    else:
        try:
            target: Any = sys.modules.get(module) or importlib.import_module(module)
            for part in name.split("."):
                target = getattr(target, part)
            found = target
        except (ImportError, AttributeError, ValueError):
            found = None
    if isinstance(found, type) and issubclass(found, BaseException):
        return found
    return _standin(module, name)


def _standin(module: str, name: str) -> type[BaseException]:
    """A class named like the original, used when the original cannot be imported."""
    key = (module, name)
    if key not in _standins:
        cls = type(name.rpartition(".")[2], (Exception,), {"__module__": module})
        _standins[key] = cls
    return _standins[key]
