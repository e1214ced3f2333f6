"""``import celery`` resolved to caraway, for the runner's pytest process only.

A meta-path finder placed first answers every ``celery`` and ``celery.*`` import with a proxy
module over ``caraway`` / ``caraway.*``. A name caraway lacks does not break the import of a
whole test file: it becomes a :class:`MissingName` stand-in that fails the test that uses it,
saying which Celery name is missing. The same holds for a whole missing module.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Callable, Sequence
from typing import Any, cast

ALIAS = "celery"
TARGET = "caraway"


class MissingNameError(NotImplementedError):
    """A Celery name that caraway does not provide was used."""


class _MissingMeta(type):
    def __init__(cls, name: str, bases: tuple[type, ...], namespace: dict[str, Any]) -> None:
        super().__init__(name, bases, namespace)
        cls.__qualname__ = name

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise MissingNameError(f"caraway has no {cls.__qualname__}.{name}")


class MissingName(metaclass=_MissingMeta):
    """Stand-in for a missing Celery name: subclassing works, using it fails."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise MissingNameError(f"caraway has no {type(self).__qualname__}")


def missing(qualified: str) -> type[MissingName]:
    return cast("type[MissingName]", _MissingMeta(qualified, (MissingName,), {}))


def _unregistered_command(*args: Any, **kwargs: Any) -> Callable[[Any], Any]:
    """``@control_command(...)`` on a worker command caraway cannot register from outside.

    Celery's ``t/integration/tasks.py`` declares remote-control commands at import time; the
    function stays as it is, so only the tests that call those commands fail.
    """
    if len(args) == 1 and callable(args[0]) and not kwargs:
        return args[0]  # type: ignore[no-any-return]
    return lambda function: function


#: Import-time stand-ins for decorators whose absence would fail every test of a file.
DECORATORS: dict[str, Callable[..., Any]] = {
    "celery.worker.control.control_command": _unregistered_command,
    "celery.worker.control.inspect_command": _unregistered_command,
}


class AliasModule(types.ModuleType):
    """``celery.x`` as seen by Celery code: the names of ``caraway.x``, or stand-ins."""

    def __init__(self, name: str, target: types.ModuleType | None) -> None:
        super().__init__(name)
        self.__target = target
        self.__path__: list[str] = []

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            if self.__target is None:
                raise AttributeError(name)
            return getattr(self.__target, name)
        qualified = f"{self.__name__}.{name}"
        if qualified in DECORATORS:
            return DECORATORS[qualified]
        value = getattr(self.__target, name, _ABSENT) if self.__target else _ABSENT
        if isinstance(value, types.ModuleType) or (
            value is _ABSENT and self.__target and _exists(f"{self.__target.__name__}.{name}")
        ):
            return importlib.import_module(qualified)
        if value is _ABSENT:
            return missing(qualified)
        return value

    def __dir__(self) -> list[str]:
        return dir(self.__target) if self.__target else []


_ABSENT = object()


def _exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False


class AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``celery.*`` before any installed Celery does."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != ALIAS and not fullname.startswith(ALIAS + "."):
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        real_name = TARGET + spec.name[len(ALIAS) :]
        try:
            real = importlib.import_module(real_name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not real_name.startswith(exc.name):
                raise
            real = None
        return AliasModule(spec.name, real)

    def exec_module(self, module: types.ModuleType) -> None:
        """Nothing to run: the proxy reads caraway's module on each access."""


def install() -> None:
    """Put the finder first and forget any Celery already imported in this process."""
    for name in [n for n in sys.modules if n == ALIAS or n.startswith(ALIAS + ".")]:
        del sys.modules[name]
    if not any(isinstance(finder, AliasFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, AliasFinder())
