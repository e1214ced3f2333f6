"""``--logfile``/``--pidfile`` templates: Celery's node-name fields."""

from __future__ import annotations

import pytest

from caraway.utils.log import expand_node_path

NODE = "w1@host.example.com"


@pytest.mark.parametrize(
    ("template", "index", "expected"),
    [
        ("%p.log", None, "w1@host.example.com.log"),
        ("%h.log", None, "host.example.com.log"),
        ("%n.log", None, "w1.log"),
        ("%d.log", None, "example.com.log"),
        ("%n%I.log", None, "w1.log"),
        ("%n%I.log", 2, "w1-2.log"),
        ("%n-%i.log", None, "w1-0.log"),
        ("%n-%i.log", 3, "w1-3.log"),
        ("100%%-%n.log", None, "100%-w1.log"),
        ("/var/log/plain.log", 1, "/var/log/plain.log"),
    ],
)
def test_fields_are_filled_in(template: str, index: int | None, expected: str) -> None:
    assert expand_node_path(template, NODE, index) == expected


def test_a_node_name_without_at_is_a_host() -> None:
    assert expand_node_path("%n@%h", "box.lan") == "celery@box.lan"
