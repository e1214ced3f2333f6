"""Stamping: custom headers put on every task of a canvas, carried in each task's message.

A stamp is an option of a signature named in its ``stamped_headers`` option; the message
sent for it carries the names in the ``stamped_headers`` header and the values in the
``stamps`` header (Celery 5.3+, docs/celery-wire.md §1.3), so a Celery worker reads
caraway's stamps and the other way round. ``sig.stamp(visitor, **headers)`` walks the canvas
(chains, groups, chord headers and bodies, callbacks and errbacks) and asks the visitor,
at each node, for the stamps of what lies below it; stamps given by an enclosing node win
over the visitor's, which win over those a signature already had, unless ``append_stamps``
gathers all of them in a list.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from caraway.canvas.stamps import as_values, merge, own_stamps

if TYPE_CHECKING:
    from caraway.canvas.signatures import Signature


class StampingVisitor(ABC):
    """What to stamp, asked at each node of a canvas; ``on_signature`` is the one required.

    Each ``on_*_start``/``on_signature``/``on_chord_body``/``on_callback``/``on_errback``
    returns the stamps (a dict, optionally with its own ``stamped_headers`` list) for that
    node and what lies below it; ``headers`` are the stamps gathered from the nodes above.
    """

    @abstractmethod
    def on_signature(self, sig: Signature, **headers: Any) -> dict[str, Any]:
        """The stamps of one task."""

    def on_group_start(self, group: Signature, **headers: Any) -> dict[str, Any]:
        return {}

    def on_group_end(self, group: Signature, **headers: Any) -> None:
        return None

    def on_chain_start(self, chain: Signature, **headers: Any) -> dict[str, Any]:
        return {}

    def on_chain_end(self, chain: Signature, **headers: Any) -> None:
        return None

    def on_chord_header_start(self, sig: Signature, **headers: Any) -> dict[str, Any]:
        """A chord's header is a group: by default, what ``on_group_start`` says of it."""
        return self.on_group_start(_header_group(sig), **headers)

    def on_chord_header_end(self, sig: Signature, **headers: Any) -> None:
        self.on_group_end(_header_group(sig), **headers)

    def on_chord_body(self, sig: Signature, **headers: Any) -> dict[str, Any]:
        return {}

    def on_callback(self, callback: Signature, **headers: Any) -> dict[str, Any]:
        return {}

    def on_errback(self, errback: Signature, **headers: Any) -> dict[str, Any]:
        return {}


def _header_group(sig: Signature) -> Signature:
    """A chord's header as a group (Celery hands the visitor's group hooks a group)."""
    return cast("Signature", getattr(sig, "header_group", sig))


def _members(sig: Signature) -> list[Signature]:
    """The signatures directly under a chain, a group or a chord's header."""
    return list(cast("Any", sig).tasks)


def collect(
    sig: Signature,
    visitor_stamps: dict[str, Any] | None,
    append: bool,
    given: dict[str, Any],
    own: bool = True,
) -> dict[str, Any]:
    """The stamps for ``sig``: the ``given`` ones, then the visitor's, then (``own``) those
    ``sig`` already carries."""
    stamps = merge(given, dict(visitor_stamps or {}), append)
    return merge(stamps, own_stamps(sig.options), append) if own else stamps


# --- walking a canvas ----------------------------------------------------------------------


class Stamper:
    """One stamping pass over a canvas, in place. ``rebuild`` makes a signature of a link
    kept in its dict form (``maybe_signature``), handed in so this module needs no
    signature classes."""

    def __init__(
        self,
        visitor: StampingVisitor | None,
        append: bool,
        rebuild: Callable[[Any, Any], Signature],
    ) -> None:
        self.visitor = visitor
        self.append = append
        self.rebuild = rebuild

    def _ask(self, hook: str, sig: Signature, given: dict[str, Any]) -> dict[str, Any] | None:
        if self.visitor is None:
            return None
        return dict(getattr(self.visitor, hook)(sig, **given) or {})

    def stamp(self, sig: Signature, given: dict[str, Any]) -> None:
        """Stamp ``sig`` and everything under it."""
        kind = sig.subtask_type
        if kind == "chain":
            self._members(sig, given, "on_chain_start", "on_chain_end")
        elif kind == "group":
            self._members(sig, given, "on_group_start", "on_group_end")
        elif kind == "chord":
            self._chord(sig, given)
        else:
            self.links(sig, given)
            found = self._ask("on_signature", sig, given)
            sig.options.update(collect(sig, found, self.append, given))

    def _members(self, sig: Signature, given: dict[str, Any], start: str, end: str) -> None:
        """A chain or a group: its links and members get the stamps; its own options do not."""
        stamps = collect(sig, self._ask(start, sig, given), self.append, given)
        self.links(sig, stamps)
        for member in _members(sig):
            self.stamp(member, stamps)
        if self.visitor is not None:
            getattr(self.visitor, end)(sig, **stamps)

    def _chord(self, sig: Signature, given: dict[str, Any]) -> None:
        stamps = collect(sig, self._ask("on_chord_header_start", sig, given), self.append, given)
        self.links(sig, stamps)
        for member in _members(sig):
            self.stamp(member, stamps)
        if self.visitor is not None:
            self.visitor.on_chord_header_end(sig, **stamps)
        body = sig["kwargs"].get("body")
        if body is None:
            return
        body = self.rebuild(body, sig._app)
        sig["kwargs"]["body"] = body
        if self.visitor is not None:
            stamps = collect(sig, self._ask("on_chord_body", sig, stamps), self.append, stamps)
        self.stamp(body, stamps)

    def links(self, sig: Signature, given: dict[str, Any]) -> None:
        """Stamp the callbacks and errbacks of ``sig`` with ``given`` and what the visitor's
        ``on_callback``/``on_errback`` say; a link does not take ``sig``'s own stamps."""
        options = sig.options
        for key, hook in (("link", "on_callback"), ("link_error", "on_errback")):
            links = options.get(key)
            if not links:
                continue
            stamped = []
            for raw in as_values(links):
                link = self.rebuild(raw, sig._app)
                found = self._ask(hook, link, given)
                self.stamp(link, collect(link, found, self.append, given, own=False))
                stamped.append(link)
            # A link given as one dict becomes a stamped signature in the same place.
            options[key] = stamped if isinstance(links, list | tuple) else stamped[0]
