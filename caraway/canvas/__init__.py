"""Signatures and the workflows built from them: chain, group, chord, chunks, map, starmap.

Every one is a dict in Celery's wire form (docs/celery-wire.md §6.1), so it can travel inside a
message and be rebuilt anywhere with ``signature(d)``. Composite signatures are pseudo-tasks
(``celery.chain``, ``celery.group``, ``celery.chord``) that are never sent as such: applying
one publishes its member tasks, with the chain reversed in ``embed.chain`` and chord bodies
in ``embed.chord`` (docs/celery-wire.md §6.3-6.5).
"""

from caraway.canvas.signatures import Signature, maybe_signature, signature, subtask  # isort: skip
from caraway.canvas.chain import chain  # isort: skip
from caraway.canvas.chain import _chain as _chain  # isort: skip  (Celery code imports it)
from caraway.canvas.group import chord, group  # isort: skip
from caraway.canvas.maps import chunks, xmap, xstarmap  # isort: skip
from caraway.canvas.stamping import StampingVisitor  # isort: skip

__all__ = [
    "Signature",
    "StampingVisitor",
    "chain",
    "chord",
    "chunks",
    "group",
    "maybe_signature",
    "signature",
    "subtask",
    "xmap",
    "xstarmap",
]
