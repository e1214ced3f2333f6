"""A task's workflow as a graph: relatives found through roots and groups, boxes in layers,
arrows parent → child, and a chord's header members all pointing to its body."""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from caraway.dashboard.graph import (
    GAP_X,
    GAP_Y,
    MARGIN,
    MAX_NODES,
    NODE_HEIGHT,
    NODE_WIDTH,
    Graph,
    layout,
    relatives,
    workflow_graph,
)
from caraway.dashboard.store import Limits, Store

_clock = itertools.count(1_000_000)
COLUMN = NODE_WIDTH + GAP_X
ROW = NODE_HEIGHT + GAP_Y


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "dash.sqlite3", Limits(max_age=float("inf")))


def received(task_id: str, root: str, parent: str | None = None, group: str | None = None,
             body: str | None = None, name: str = "proj.add") -> dict[str, Any]:  # fmt: skip
    """A ``task-received`` event as caraway's workers send it (with ``group_id`` and, for a
    chord's header member, ``chord_body``)."""
    return {"type": "task-received", "uuid": task_id, "name": name, "root_id": root,
            "parent_id": parent, "group_id": group, "chord_body": body, "hostname": "w1@host",
            "timestamp": float(next(_clock))}  # fmt: skip


def draw(store: Store, task_id: str) -> Graph:
    task = store.task(task_id)
    assert task is not None
    graph = workflow_graph(store, task)
    assert graph is not None
    return graph


def at(graph: Graph) -> dict[str, tuple[int, float, float]]:
    return {node.uuid: (node.layer, node.x, node.y) for node in graph.nodes}


def arrows(graph: Graph) -> set[tuple[str, str]]:
    return {(edge.source, edge.target) for edge in graph.edges}


def test_a_chain_is_one_column_of_layers(store: Store) -> None:
    store.add_task_events([received("a", "a"), received("b", "a", "a"), received("c", "a", "b")])

    graph = draw(store, "b")

    assert at(graph) == {"a": (0, MARGIN, MARGIN), "b": (1, MARGIN, MARGIN + ROW),
                         "c": (2, MARGIN, MARGIN + 2 * ROW)}  # fmt: skip
    assert arrows(graph) == {("a", "b"), ("b", "c")}
    [first] = [e for e in graph.edges if e.source == "a"]
    assert (first.x1, first.y1) == (MARGIN + NODE_WIDTH / 2, MARGIN + NODE_HEIGHT)
    assert (first.x2, first.y2) == (MARGIN + NODE_WIDTH / 2, MARGIN + ROW)
    assert [n.uuid for n in graph.nodes if n.current] == ["b"]
    assert (graph.width, graph.height, graph.more) == (
        2 * MARGIN + NODE_WIDTH, 2 * MARGIN + 3 * NODE_HEIGHT + 2 * GAP_Y, 0)  # fmt: skip


def test_a_group_fans_out_under_its_parent(store: Store) -> None:
    store.add_task_events([
        received("p", "p"),
        *(received(f"g{i}", "p", "p", group="G") for i in range(3)),
    ])  # fmt: skip

    graph = draw(store, "g1")

    layers = at(graph)
    assert [layers[f"g{i}"][1] for i in range(3)] == [MARGIN + i * COLUMN for i in range(3)]
    assert layers["p"] == (0, MARGIN + COLUMN, MARGIN)  # centred above the three
    assert arrows(graph) == {("p", "g0"), ("p", "g1"), ("p", "g2")}
    assert not any(edge.join for edge in graph.edges)


def test_a_group_on_its_own_is_one_row(store: Store) -> None:
    # group(a, b) sent on its own: each member is its own root, only the group ties them
    store.add_task_events([received("g0", "g0", group="G"), received("g1", "g1", group="G")])

    graph = draw(store, "g1")

    assert at(graph) == {"g0": (0, MARGIN, MARGIN), "g1": (0, MARGIN + COLUMN, MARGIN)}
    assert graph.edges == []


def test_a_chord_joins_every_header_member_to_its_body(store: Store) -> None:
    # A chord sent on its own, as caraway's events tell it: each member is its own root and
    # names the body; the body is sent by the member that finished last (h2), under h2's
    # root, and carries the header's group.
    store.add_task_events([
        *(received(f"h{i}", f"h{i}", group="G", body="body") for i in range(3)),
        received("body", "h2", "h2", group="G", name="proj.tsum"),
        received("after", "h2", "body"),
    ])  # fmt: skip

    for page in ("body", "h0", "after"):  # found from any of its pages
        graph = draw(store, page)
        layers = at(graph)
        assert {task: layer for task, (layer, _, _) in layers.items()} == {
            "h0": 0, "h1": 0, "h2": 0, "body": 1, "after": 2}  # fmt: skip
        assert layers["body"][1] == MARGIN + COLUMN  # under the middle member
        assert arrows(graph) == {("h0", "body"), ("h1", "body"), ("h2", "body"),
                                 ("body", "after")}  # fmt: skip
        assert {(e.source, e.join) for e in graph.edges if e.target == "body"} == {
            ("h0", True), ("h1", True), ("h2", False)}  # fmt: skip


def test_a_chord_in_a_chain_sits_below_its_slowest_branch(store: Store) -> None:
    # a | chord([c0 | c1, h], body): the header's chain names the body on its last step
    store.add_task_events([
        received("a", "a"),
        received("c0", "a", "a"),
        received("h", "a", "a", group="G", body="body"),
        received("c1", "a", "c0", group="G", body="body"),
        received("body", "a", "h", group="G"),
    ])  # fmt: skip

    graph = draw(store, "a")

    layers = {task: layer for task, (layer, _, _) in at(graph).items()}
    assert layers == {"a": 0, "c0": 1, "h": 1, "c1": 2, "body": 3}
    assert arrows(graph) == {("a", "c0"), ("a", "h"), ("c0", "c1"), ("c1", "body"),
                             ("h", "body")}  # fmt: skip


def test_from_celerys_workers_the_graph_is_the_parent_tree(store: Store) -> None:
    store.add_task_events([received("a", "a"), received("h0", "a", "a"),
                           received("h1", "a", "a"), received("body", "a", "h1")])  # fmt: skip
    assert arrows(draw(store, "a")) == {("a", "h0"), ("a", "h1"), ("h1", "body")}


def test_a_lone_task_has_no_graph(store: Store) -> None:
    store.add_task_events([received("solo", "solo")])
    task = store.task("solo")
    assert task is not None
    assert workflow_graph(store, task) is None


def test_a_huge_group_is_cut_at_the_limit_and_counted(store: Store) -> None:
    members = [received(f"m{i:03}", "p", "p", group="G") for i in range(MAX_NODES + 50)]
    store.add_task_events([received("p", "p"), *members])
    last = members[-1]["uuid"]

    graph = draw(store, last)

    assert len(graph.nodes) == MAX_NODES
    assert graph.more == 51  # 251 tasks in all
    assert [n.uuid for n in graph.nodes if n.current] == [last]  # drawn though past the cut
    tasks, total = relatives(store, store.task("p") or {})
    assert (len(tasks), total) == (MAX_NODES, MAX_NODES + 51)


def test_layout_places_a_cycle_on_the_first_layer() -> None:
    tasks = [{"uuid": u, "name": "n", "state": "SUCCESS", "parent_id": p, "chord_body": None}
             for u, p in (("a", "b"), ("b", "a"))]  # fmt: skip
    graph = layout(tasks, "a")
    assert {n.layer for n in graph.nodes} == {0}


def test_an_older_history_file_gets_the_group_column(tmp_path: Path) -> None:
    path = tmp_path / "dash.sqlite3"
    Store(path).close()
    with sqlite3.connect(path) as conn:  # as the file was before group ids were kept
        for column in ("group", "chord"):
            conn.execute(f"DROP INDEX tasks_by_{column}")
        conn.execute("ALTER TABLE tasks DROP COLUMN group_id")
        conn.execute("ALTER TABLE tasks DROP COLUMN chord_body")
    conn.close()

    store = Store(path, Limits(max_age=float("inf")))
    store.add_task_events([received("h0", "h0", group="G", body="b")])
    assert [(store.task("h0") or {})[c] for c in ("group_id", "chord_body")] == ["G", "b"]
