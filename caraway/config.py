"""``app.conf``: settings in three layers (defaults < source < changes), the source read lazily.

The source is what ``config_from_object`` names: a dict, any object, a module, or a string
naming one (``'proj.celeryconfig'``, ``'django.conf:settings'``). It is imported and read on
the first access, so it can be named before Django is set up, as with Celery.

How a source's keys are read:

* Without a namespace, lowercase keys are settings and uppercase keys are Celery 3 names
  (:data:`caraway.settings.OLD_NAMES`), mapped with one ConfigurationWarning naming the new
  names: Celery reads them until 6.0 but asks everyone to migrate, so we say so. Mixing old
  and new names in one source is an error, as in Celery, unless the old one is only there
  beside its new name (a config shared with Celery 3). ``CELERY_TASK_ACKS_LATE``-style keys
  mean a namespace was forgotten; they are mapped with a warning that says so. Other
  uppercase keys are constants of the module, not settings, and are skipped.
* With ``namespace='CELERY'`` only ``CELERY_*`` keys are read: ``CELERY_BROKER_URL`` is
  ``broker_url``. This is the form Celery's docs prescribe for Django, so it is not
  deprecated and gives no warning. A Celery 3 name that still carries the prefix
  (``CELERY_ALWAYS_EAGER``) is mapped too, with a warning naming the namespaced new name —
  Celery would silently ignore it.
* Unknown keys: names starting with ``_`` and values that are modules, functions or classes
  are skipped (config modules import things). A near miss (difflib ratio ≥ 0.8) is an error
  with a "did you mean"; anything else is kept as a user setting with a warning, once.

Four settings are read from the environment first, over every layer, as Celery reads them:
``CELERY_BROKER_URL``, ``CELERY_BROKER_READ_URL``, ``CELERY_BROKER_WRITE_URL`` and
``CELERY_RESULT_BACKEND`` (see :data:`ENVIRONMENT`). A container that sets them reaches its
broker even when the code names another one (or none: the embedded file).
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import os
import re
import sys
import threading
import warnings
from collections.abc import Iterator, Mapping, MutableMapping
from importlib import import_module
from types import ModuleType
from typing import Any

from caraway.exceptions import ConfigurationWarning, ImproperlyConfigured
from caraway.settings import OLD_NAMES, SETTINGS, Setting, Status, coerce, suggest
from caraway.utils.text import mask_url

__all__ = ["ENVIRONMENT", "Configuration", "audit", "load_from_envvar", "load_source"]

#: How close an unknown name must be to a valid one to be treated as a typo.
TYPO_CUTOFF = 0.8
#: Settings an environment variable overrides, whatever the app, its source or a change says:
#: Celery's precedence, so deployments that configure Celery by environment keep working.
#: Read when a setting is resolved: on first read and after each change of the configuration
#: (reads are cached). ``caraway -b`` / ``--result-backend`` set these variables (for pool
#: children and ``--detach``) and the setting, so the command line wins over all.
ENVIRONMENT = {
    "broker_url": "CELERY_BROKER_URL",
    "broker_read_url": "CELERY_BROKER_READ_URL",
    "broker_write_url": "CELERY_BROKER_WRITE_URL",
    "result_backend": "CELERY_RESULT_BACKEND",
}
_SECRET_KEY = re.compile(r"pass|secret|token|signature|private|credential|api_?key", re.I)
_MASK = "********"


class Configuration(MutableMapping[str, Any]):
    """The object behind ``app.conf``: ``conf.broker_url``, ``conf["broker_url"]``, ``update``.

    Reading a setting nobody set gives its default. Reading by a Celery 3 name
    (``conf.CELERY_ALWAYS_EAGER``) gives the new setting's value.
    """

    def __init__(self, preconf: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        self._changes: dict[str, Any] = {}
        self._source: dict[str, Any] = {}
        self._defaults: dict[str, Any] = {}
        self._pending: tuple[Any, str | None, bool] | None = None
        self._warned: set[str] = set()
        self._old_keys: set[str] = set()
        self._lock = threading.Lock()
        # Resolved reads, ``name -> (generation, value)``: a send or a task run reads about
        # ten settings. Every write bumps the generation after it changed a layer, so an
        # entry computed while one happened is never used (no lock on the read path).
        self._generation = 0
        self._resolved: dict[str, tuple[int, Any]] = {}
        # Attribute reads (``conf.task_serializer``) are served from the instance dict once
        # resolved, at plain attribute speed; every change drops them under this lock.
        self._attr_lock = threading.Lock()
        self._attrs: set[str] = set()
        self.update(preconf, **kwargs)

    # -- the source ---------------------------------------------------------------------------

    def set_source(self, obj: Any, namespace: str | None = None, *, silent: bool = False) -> None:
        """Use ``obj`` as the source layer, replacing any earlier one; read on first access.

        ``silent=True`` turns a missing configuration module into an empty source.
        """
        with self._lock:
            self._pending = (obj, namespace, silent)
            self._source = {}
            self._old_keys = set()
            self._changed()

    @property
    def generation(self) -> int:
        """A number every change of the settings increases: what a cache built from them
        compares (values changed in place, a list appended to, are not changes)."""
        return self._generation

    def _changed(self) -> None:
        with self._attr_lock:
            self._generation += 1
            self._resolved = {}
            for name in self._attrs:
                del self.__dict__[name]
            self._attrs.clear()

    def _load(self) -> None:
        if self._pending is None:
            return
        with self._lock:
            if self._pending is None:
                return
            pending, self._pending = self._pending, None  # a re-entrant read sees no source
            try:
                self._source = load_source(
                    *pending[:2], silent=pending[2], warned=self._warned, old_keys=self._old_keys
                )
            except BaseException:
                self._pending = pending  # a broken source keeps failing, never reads as empty
                raise
            finally:
                self._changed()

    # -- mapping protocol ---------------------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        generation = self._generation
        entry = self._resolved.get(key)
        if entry is not None and entry[0] == generation:
            return entry[1]
        value = self._resolve(key)
        self._resolved[key] = (generation, value)
        return value

    def _resolve(self, key: str) -> Any:
        name = OLD_NAMES.get(key, key)
        variable = ENVIRONMENT.get(name)
        if variable is not None:
            from_environment = os.environ.get(variable)
            if from_environment:
                return from_environment
        if name in self._changes:
            value = self._changes[name]
        else:
            self._load()
            if name in self._source:
                value = self._source[name]
            elif name in SETTINGS:
                value = self._default(name)
            else:
                raise KeyError(key)
        fallback = SETTINGS[name].fallback if name in SETTINGS else None
        return self[fallback] if value is None and fallback else value

    def __setitem__(self, key: str, value: Any) -> None:
        name = _name_for_write(key, self._warned)
        if name in SETTINGS:
            value = coerce(SETTINGS[name], value)
            audit(SETTINGS[name], key, value)
        self._changes[name] = value
        self._changed()

    def __delitem__(self, key: str) -> None:
        """Remove the top-most configured value: a change, else the source's; defaults stay."""
        name = OLD_NAMES.get(key, key)
        if self._changes.pop(name, _MISSING) is not _MISSING:
            self._changed()
            return
        self._load()
        if self._source.pop(name, _MISSING) is _MISSING:
            raise KeyError(key)
        self._changed()

    def __iter__(self) -> Iterator[str]:
        self._load()
        yield from SETTINGS
        yield from (key for key in self._source if key not in SETTINGS)
        yield from (k for k in self._changes if k not in SETTINGS and k not in self._source)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        name = OLD_NAMES.get(key, key)
        if name in SETTINGS or name in self._changes:
            return True
        self._load()
        return name in self._source

    def update(self, mapping: Mapping[str, Any] | None = None, /, **kwargs: Any) -> None:  # type: ignore[override]
        """Set many settings at once; the changes layer wins over source and defaults."""
        for key, value in {**(mapping or {}), **kwargs}.items():
            self[key] = value

    def setdefault(self, key: str, default: Any = None) -> Any:
        """Set ``key`` unless the source or a change already configures it; return its value.

        Unlike a plain mapping, a setting that only has its default counts as unset, so
        extensions can change a default without overriding the user.
        """
        name = OLD_NAMES.get(key, key)
        self._load()
        if name not in self._changes and name not in self._source:
            self[key] = default
        return self[key]

    # -- attribute access ---------------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        generation = self._generation
        try:
            value = self[name]
        except KeyError:
            raise AttributeError(_unknown_message(name)) from None
        with self._attr_lock:
            if generation == self._generation:  # no change since: safe to keep
                self.__dict__[name] = value
                self._attrs.add(name)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *self})

    def __repr__(self) -> str:
        # Never loads the source: a repr in a debugger must not import Django settings early.
        pending = ", source not read yet" if self._pending else ""
        return f"<Configuration: {len(self._changes)} changes{pending}>"

    def check(self) -> None:
        """Read the source now, and audit what the environment sets (``app.finalize`` calls
        it): a refused setting, even one only set by a variable, fails here, as in Celery."""
        self._load()
        for name, variable in ENVIRONMENT.items():
            value = os.environ.get(variable)
            if value:
                audit(SETTINGS[name], variable, value)

    # -- reports ------------------------------------------------------------------------------

    @property
    def deprecated_settings(self) -> set[str]:
        """The old setting names the source used, as written (``inspect conf`` reports them)."""
        self._load()
        return set(self._old_keys)

    def table(self, with_defaults: bool = False) -> dict[str, Any]:
        """Settings as a dict: those configured (source, changes, environment), or all."""
        if with_defaults:
            return {key: self[key] for key in self}
        self._load()
        from_environment = [name for name, var in ENVIRONMENT.items() if os.environ.get(var)]
        return {
            key: self[key]
            for key in {**self._source, **self._changes, **dict.fromkeys(from_environment)}
        }

    def humanize(self, with_defaults: bool = False) -> str:
        """``name: value`` lines, sorted, with passwords and secrets masked (for reports)."""
        table = self.table(with_defaults)
        return "\n".join(f"{key}: {_censor(key, table[key])!r}" for key in sorted(table))

    def _default(self, name: str) -> Any:
        # A private copy, so appending to conf.accept_content never edits the shared table.
        if name not in self._defaults:
            self._defaults[name] = copy.deepcopy(SETTINGS[name].default)
        return self._defaults[name]


_MISSING: Any = object()


def load_from_envvar(conf: Configuration, variable_name: str, silent: bool = False) -> bool:
    """``config_from_envvar``: use the module named by ``$variable_name`` as the source.

    Returns False when the variable is unset and ``silent`` is true.
    """
    module_name = os.environ.get(variable_name)
    if not module_name:
        if silent:
            return False
        raise ImproperlyConfigured(
            f"The environment variable {variable_name!r} is not set; set it to the name of "
            f"your configuration module, for example {variable_name}=proj.celeryconfig"
        )
    conf.set_source(module_name, silent=silent)
    return True


def load_source(
    obj: Any,
    namespace: str | None = None,
    *,
    silent: bool = False,
    warned: set[str] | None = None,
    old_keys: set[str] | None = None,
) -> dict[str, Any]:
    """Read a source into ``{setting name: checked value}`` by the rules of this module.

    ``warned`` collects keys already warned about, so a caller warns about each only once;
    ``old_keys`` collects the old setting names read, as written.
    """
    if isinstance(obj, str):
        try:
            obj = _import_object(obj)
        except _SourceNotFound as exc:
            if silent:
                return {}
            raise ImproperlyConfigured(str(exc)) from exc.__cause__
    warned = set() if warned is None else warned
    old_keys = set() if old_keys is None else old_keys
    items = _source_items(obj, namespace)
    if namespace:
        return _read_namespaced(items, namespace, warned, old_keys)
    return _read_plain(items, warned, old_keys)


def _source_items(obj: Any, namespace: str | None) -> Iterator[tuple[str, Any]]:
    keep = (lambda key: key.startswith(f"{namespace}_")) if namespace else _is_public
    if isinstance(obj, Mapping):
        yield from ((k, v) for k, v in obj.items() if isinstance(k, str) and keep(k))
        return
    for key in dir(obj):
        if keep(key):
            with contextlib.suppress(AttributeError):
                yield key, getattr(obj, key)


def _is_public(key: str) -> bool:
    return not key.startswith("_")


def _read_plain(
    items: Iterator[tuple[str, Any]], warned: set[str], old_keys: set[str]
) -> dict[str, Any]:
    new: dict[str, Any] = {}
    old: dict[str, tuple[str, Any]] = {}  # new name -> (key as written, value)
    forgot_namespace: list[str] = []
    for key, value in items:
        if key in SETTINGS:
            new[key] = _checked(key, key, value)
        elif key in OLD_NAMES:
            old[OLD_NAMES[key]] = (key, value)
        elif key.startswith("CELERY_") and key[7:].lower() in SETTINGS:
            old[key[7:].lower()] = (key, value)
            forgot_namespace.append(key)
        elif key.islower():
            _keep_unknown(new, key, key, value, warned)
    if new and old:
        unpaired = sorted((key, name) for name, (key, _) in old.items() if name not in new)
        if unpaired:
            renames = "\n".join(f"  {key} -> {name}" for key, name in unpaired)
            raise ImproperlyConfigured(
                "The configuration mixes new lowercase setting names with old uppercase ones; "
                f"use one style. Rename:\n{renames}"
            )
    elif old:
        renames = ", ".join(f"{key} -> {name}" for name, (key, _) in sorted(old.items()))
        hint = " (or load it with namespace='CELERY')" if forgot_namespace else ""
        warnings.warn(
            f"Old setting names are read for now; rename them{hint}: {renames}",
            ConfigurationWarning,
            stacklevel=4,
        )
        new.update({name: _checked(name, key, value) for name, (key, value) in old.items()})
        old_keys.update(key for key, _ in old.values())
    return new


def _read_namespaced(
    items: Iterator[tuple[str, Any]], namespace: str, warned: set[str], old_keys: set[str]
) -> dict[str, Any]:
    prefix = f"{namespace}_"
    result: dict[str, Any] = {}
    renamed: list[str] = []
    for key, value in items:
        name = key[len(prefix) :].lower()
        if name in SETTINGS:
            result[name] = _checked(name, key, value)
        elif key in OLD_NAMES:
            name = OLD_NAMES[key]
            result.setdefault(name, _checked(name, key, value))
            old_keys.add(key)
            renamed.append(f"{key} -> {prefix}{name.upper()}")
        elif not name.startswith("_"):
            _keep_unknown(result, name, key, value, warned, prefix)
    if renamed:
        warnings.warn(
            f"Old setting names are read for now; rename them: {', '.join(sorted(renamed))}",
            ConfigurationWarning,
            stacklevel=4,
        )
    return result


def _checked(name: str, key: str, value: Any) -> Any:
    try:
        value = coerce(SETTINGS[name], value)
    except ImproperlyConfigured as exc:
        if key == name:
            raise
        raise ImproperlyConfigured(f"{exc} (set as {key!r})") from None
    audit(SETTINGS[name], key, value)
    return value


#: Ignored settings already warned about: once per process, as a config is often loaded by
#: several apps (tests, Django reloads) and one line per setting is enough to act on.
_warned_ignored: set[str] = set()
_warned_lock = threading.Lock()


def audit(setting: Setting, key: str, value: Any) -> None:
    """Refuse a refused setting, or warn once about an ignored one, when set to a non-default
    value (configurations shared with Celery often spell defaults out; those pass quietly).

    Warnings, not log lines: they are how caraway reports every other configuration problem,
    they reach the console before logging is set up, and ``-W error`` turns them into errors.
    """
    if setting.status is Status.WORKS or setting.is_harmless(value):
        return
    shown = key if key == setting.name else f"{key} ({setting.name})"
    if setting.status is Status.REFUSED:
        raise ImproperlyConfigured(
            f"Setting {shown!r} is not supported by caraway: {setting.reason}"
        )
    with _warned_lock:
        if setting.name in _warned_ignored:
            return
        _warned_ignored.add(setting.name)
    warnings.warn(
        f"Setting {shown!r} is accepted but ignored by caraway: {setting.reason}",
        ConfigurationWarning,
        stacklevel=4,
    )


def _keep_unknown(
    into: dict[str, Any], name: str, key: str, value: Any, warned: set[str], prefix: str = ""
) -> None:
    if inspect.ismodule(value) or inspect.isroutine(value) or inspect.isclass(value):
        return
    _check_unknown(name, key, warned, prefix)
    into[name] = value


def _name_for_write(key: str, warned: set[str]) -> str:
    """The setting ``conf[key] = value`` sets: old names map with a warning, typos raise."""
    if key in SETTINGS:
        return key
    if key in OLD_NAMES:
        name = OLD_NAMES[key]
        warnings.warn(
            f"{key!r} is an old setting name; use {name!r}", ConfigurationWarning, stacklevel=4
        )
        return name
    _check_unknown(key, key, warned)
    return key


def _check_unknown(name: str, key: str, warned: set[str], prefix: str = "") -> None:
    close = suggest(name, cutoff=TYPO_CUTOFF)
    if close is not None:
        shown = f"{prefix}{close.upper()}" if prefix else close
        raise ImproperlyConfigured(f"Unknown setting {key!r}: did you mean {shown!r}?")
    if key not in warned:
        warned.add(key)
        warnings.warn(
            f"Unknown setting {key!r} is kept as a user setting; caraway does not use it",
            ConfigurationWarning,
            stacklevel=4,
        )


def _unknown_message(name: str) -> str:
    close = suggest(name)
    return f"No setting {name!r}" + (f"; did you mean {close!r}?" if close else "")


class _SourceNotFound(Exception):
    """The configuration module itself is missing (not something it imports)."""


def _import_object(path: str) -> Any:
    """``'pkg.mod'`` (a module, else ``pkg`` attribute ``mod``) or ``'pkg.mod:attr.sub'``."""
    module_name, colon, attr = path.partition(":")
    if colon:
        return _attribute(_import_module(module_name), attr, path)
    try:
        return _import_module(path)
    except _SourceNotFound:
        parent, dot, attr = path.rpartition(".")
        if not dot:
            raise
        with contextlib.suppress(_SourceNotFound):
            return _attribute(_import_module(parent), attr, path)
        raise


def _attribute(obj: Any, dotted: str, path: str) -> Any:
    try:
        for part in dotted.split("."):
            obj = getattr(obj, part)
    except AttributeError as exc:
        raise _SourceNotFound(f"Cannot find configuration {path!r}: {exc}") from exc
    return obj


def _import_module(name: str) -> ModuleType:
    # Like Celery, also look in the current directory: console scripts do not put it on
    # sys.path, yet `caraway -A proj worker` is run from the project folder.
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        return import_module(name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if name == missing or name.startswith(missing + "."):
            raise _SourceNotFound(
                f"Configuration module {name!r} was not found (no module named {missing!r} "
                "on sys.path or in the current directory)"
            ) from exc
        raise
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(cwd)


def _censor(key: str, value: Any) -> Any:
    if isinstance(value, str):
        return _MASK if _SECRET_KEY.search(key) and value else mask_url(value, _MASK)
    if isinstance(value, bytes) and _SECRET_KEY.search(key):
        return _MASK
    if isinstance(value, Mapping):
        return {k: _censor(str(k), v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_censor(key, v) for v in value)
    return value
