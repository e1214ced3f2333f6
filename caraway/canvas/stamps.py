"""Stamps as options: a signature's ``stamped_headers`` option names the options that are
stamps. How two sets of stamps merge, and which stamps calling options may not change."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

#: The option naming which other options are stamps.
NAMES = "stamped_headers"


def names_of(stamps: dict[str, Any]) -> list[str]:
    """The stamp names a dict declares: its ``stamped_headers``, else all its keys."""
    if NAMES in stamps:
        return list(stamps[NAMES] or ())
    return [key for key in stamps if key != NAMES]


def unique(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))


def as_values(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def merge(first: dict[str, Any], later: dict[str, Any], append: bool) -> dict[str, Any]:
    """``first`` completed by ``later``: on a shared stamp ``first`` wins, or with ``append``
    the values of both are gathered in one list."""
    merged = {key: value for key, value in first.items() if key != NAMES}
    for key, value in later.items():
        if key == NAMES:
            continue
        if key not in merged:
            merged[key] = value
        elif append:
            merged[key] = [*as_values(merged[key]), *as_values(value)]
    merged[NAMES] = unique([*names_of(first), *names_of(later)])
    return merged


def own_stamps(options: dict[str, Any]) -> dict[str, Any]:
    """The stamps a signature's options carry, with their ``stamped_headers``."""
    names = list(options.get(NAMES) or ())
    if not names:
        return {}
    return {NAMES: names, **{key: options[key] for key in names if key in options}}


def keep_stamps(own: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """Options given when calling may not change a stamp the signature carries (Celery)."""
    names = own.get(NAMES)
    if not names:
        return given
    kept = {key: value for key, value in given.items() if key not in names}
    if NAMES in given:
        kept[NAMES] = unique([*names, *(given[NAMES] or ())])
    return kept
