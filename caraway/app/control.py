"""Celery's ``celery.app.control`` path: what ``app.control`` and ``app.control.inspect()``
are, and the helper that merges broadcast replies."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from caraway.control import Control, Inspect


def flatten_reply(replies: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """``[{"w1@h": r1}, {"w2@h": r2}]`` -> ``{"w1@h": r1, "w2@h": r2}`` (a later reply from
    the same node name wins, as in Celery, which also warns about the duplicate)."""
    merged: dict[str, Any] = {}
    for reply in replies:
        merged.update(reply)
    return merged


__all__ = ["Control", "Inspect", "flatten_reply"]
