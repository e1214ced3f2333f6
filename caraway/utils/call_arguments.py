"""New arguments for a retried call that was made in another form (Celery 5.7's ``retry``).

``retry(args=...)`` of a call made with keyword arguments (or ``retry(kwargs=...)`` of one
made positionally) must not give a parameter twice: the new values win, and the old ones
they cover are dropped or moved to keywords.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.POSITIONAL_ONLY)


def retry_arguments(
    fun: Callable[..., Any],
    old_args: Iterable[Any],
    old_kwargs: dict[str, Any],
    args: Iterable[Any] | None,
    kwargs: dict[str, Any] | None,
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The ``(args, kwargs)`` to send again when the retry gave only ``args`` or ``kwargs``."""
    old_args, old_kwargs = tuple(old_args), dict(old_kwargs)
    names = _positional_names(fun)
    if args is not None and kwargs is None:
        new_args = tuple(args)
        covered = set(names[: len(new_args)])
        return new_args, {k: v for k, v in old_kwargs.items() if k not in covered}
    if kwargs is not None and args is None:
        new_kwargs = dict(kwargs)
        given = names[: len(old_args)]
        if not any(name in new_kwargs for name in given) or None in given:
            return old_args, {**old_kwargs, **new_kwargs}
        # A new keyword names a parameter given positionally: every named one goes by name.
        keyword_only = min(len(old_args), len(names))
        moved = {str(n): v for n, v in zip(names[:keyword_only], old_args, strict=True)}
        return old_args[keyword_only:], {**old_kwargs, **moved, **new_kwargs}
    return tuple(args or old_args), dict(old_kwargs if kwargs is None else kwargs)


def _positional_names(fun: Callable[..., Any]) -> list[str | None]:
    """Names of the parameters a positional argument can fill, in order, None for a
    positional-only one (``self`` of a bound method left out, as ``inspect.signature`` does)."""
    try:
        parameters = inspect.signature(fun).parameters.values()
    except (TypeError, ValueError):
        return []
    return [
        None if p.kind is inspect.Parameter.POSITIONAL_ONLY else p.name
        for p in parameters
        if p.kind in _NAMED
    ]
