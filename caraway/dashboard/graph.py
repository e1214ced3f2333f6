"""A task's workflow drawn as a graph: who its relatives are, and where each box and arrow
goes (a small layered layout, rendered as SVG by the task page's template).

Edges come from the events: a task points to those it sent (``parent_id``), and each
member of a chord's header points to the chord's body (``chord_body``: the body is sent by
whichever member finished last, so its ``parent_id`` names that one only). Relatives are
found by root, by chord body and by group (``group_id``): a top-level chord or group has no
common root, each member being its own. ``group_id`` and ``chord_body`` come from caraway's
workers; with Celery's workers the graph is the tree of ``parent_id`` under one root.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from caraway.dashboard.store import Store

#: Boxes drawn at most: a wide group or a long chain stays a page, not a poster.
MAX_NODES = 200
#: Rounds of "add the roots and groups just found": a chord of chords needs a few.
MAX_ROUNDS = 6
NODE_WIDTH, NODE_HEIGHT = 150.0, 36.0
#: Space between boxes across a layer, and between layers.
GAP_X, GAP_Y = 24.0, 40.0
MARGIN = 8.0


@dataclass(frozen=True)
class Node:
    uuid: str
    name: str
    state: str
    layer: int
    #: Top-left corner of the box, in the SVG's units.
    x: float
    y: float
    current: bool


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    #: From the bottom middle of the source's box to the top middle of the target's.
    x1: float
    y1: float
    x2: float
    y2: float
    #: A chord's join: drawn from a member of the header that did not send the body.
    join: bool


@dataclass(frozen=True)
class Graph:
    nodes: list[Node]
    edges: list[Edge]
    width: float
    height: float
    #: Relatives not drawn (past ``MAX_NODES``).
    more: int
    node_width: float = NODE_WIDTH
    node_height: float = NODE_HEIGHT


def relatives(store: Store, task: dict[str, Any], limit: int = MAX_NODES
              ) -> tuple[list[dict[str, Any]], int]:  # fmt: skip
    """``task``'s workflow, first seen first: every task under the same root as one already
    found, in the same group, or joined into the same chord body; at most ``limit`` of
    them, and how many there are."""
    ids = {task["uuid"], task["root_id"] or task["uuid"]}
    groups = {task["group_id"]} if task.get("group_id") else set()
    found: list[dict[str, Any]] = [task]
    for _ in range(MAX_ROUNDS):
        found = store.relatives(sorted(ids), sorted(groups), limit + 1) or [task]
        new_ids = {t["uuid"] for t in found} | {t["root_id"] for t in found if t["root_id"]}
        new_ids |= {t["chord_body"] for t in found if t["chord_body"]}
        new_groups = {t["group_id"] for t in found if t["group_id"]}
        if new_ids <= ids and new_groups <= groups:
            break
        ids |= new_ids
        groups |= new_groups
    if len(found) <= limit:
        return found, len(found)
    return found[:limit], store.count_relatives(sorted(ids), sorted(groups))


def edges_of(tasks: Iterable[dict[str, Any]]) -> list[tuple[str, str, bool]]:
    """``(source, target, join)`` between the given tasks: parent to child, and each chord
    header member to the body (``join`` for those the body does not name as its parent)."""
    tasks = list(tasks)
    by_id = {t["uuid"]: t for t in tasks}
    found: list[tuple[str, str, bool]] = []
    for t in tasks:
        parent = t["parent_id"]
        if parent in by_id and parent != t["uuid"]:  # a retry names itself
            found.append((parent, t["uuid"], False))
        body = by_id.get(t["chord_body"] or "")
        if body is not None and body["uuid"] != t["uuid"] and body["parent_id"] != t["uuid"]:
            found.append((t["uuid"], body["uuid"], True))
    return found


def _layers(ids: list[str], edges: list[tuple[str, str, bool]]) -> dict[str, int]:
    """Each task's layer: the longest path to it from a task nobody sent (so a chord's body
    sits below its slowest branch). Tasks in a cycle, which events should never make, stay
    on layer 0."""
    incoming = {i: 0 for i in ids}
    outgoing: dict[str, list[str]] = {i: [] for i in ids}
    for source, target, _ in edges:
        incoming[target] += 1
        outgoing[source].append(target)
    layer = dict.fromkeys(ids, 0)
    ready = [i for i in ids if incoming[i] == 0]
    while ready:
        current = ready.pop()
        for target in outgoing[current]:
            layer[target] = max(layer[target], layer[current] + 1)
            incoming[target] -= 1
            if incoming[target] == 0:
                ready.append(target)
    return layer


def layout(tasks: list[dict[str, Any]], current: str, total: int | None = None) -> Graph:
    """Boxes in layers from the top (by ``_layers``), each layer centred under the widest
    and ordered by where its parents are (then by when first seen), arrows between them;
    ``total`` counts the relatives, drawn or not."""
    more = max((len(tasks) if total is None else total) - len(tasks), 0)
    ids = [t["uuid"] for t in tasks]
    edges = edges_of(tasks)
    layer_of = _layers(ids, edges)
    parents: dict[str, list[str]] = {i: [] for i in ids}
    for source, target, _ in edges:
        parents[target].append(source)
    rows: list[list[str]] = [[] for _ in range(max(layer_of.values(), default=0) + 1)]
    slot: dict[str, float] = {}
    for task_id in ids:
        rows[layer_of[task_id]].append(task_id)
    for row in rows:  # one top-down pass of the barycenter heuristic: fewer crossings
        seen_order = {task_id: n for n, task_id in enumerate(row)}

        def weight(task_id: str, seen_order: dict[str, int] = seen_order) -> tuple[float, int]:
            above = [slot[p] for p in parents[task_id] if p in slot]
            return (sum(above) / len(above) if above else -1.0, seen_order[task_id])

        row.sort(key=weight)
        for n, task_id in enumerate(row):
            slot[task_id] = n
    widest = max((len(row) for row in rows), default=0)
    position: dict[str, tuple[float, float]] = {}
    for depth, row in enumerate(rows):
        offset = (widest - len(row)) / 2
        for n, task_id in enumerate(row):
            position[task_id] = (MARGIN + (offset + n) * (NODE_WIDTH + GAP_X),
                                 MARGIN + depth * (NODE_HEIGHT + GAP_Y))  # fmt: skip
    nodes = [
        Node(t["uuid"], t["name"] or "?", t["state"], layer_of[t["uuid"]],
             *position[t["uuid"]], t["uuid"] == current)
        for t in tasks
    ]  # fmt: skip
    lines = [
        Edge(source, target, position[source][0] + NODE_WIDTH / 2,
             position[source][1] + NODE_HEIGHT, position[target][0] + NODE_WIDTH / 2,
             position[target][1], join)
        for source, target, join in edges
    ]  # fmt: skip
    width = 2 * MARGIN + widest * NODE_WIDTH + max(widest - 1, 0) * GAP_X
    height = 2 * MARGIN + len(rows) * NODE_HEIGHT + max(len(rows) - 1, 0) * GAP_Y
    return Graph(nodes, lines, width, height, more)


def workflow_graph(store: Store, task: dict[str, Any]) -> Graph | None:
    """The graph for ``task``'s page; None when it has no relatives kept."""
    found, total = relatives(store, task)
    if total < 2:
        return None
    if task["uuid"] not in {t["uuid"] for t in found}:  # past the limit: drawn all the same
        found = [*found[:-1], task]
    return layout(found, task["uuid"], total)
