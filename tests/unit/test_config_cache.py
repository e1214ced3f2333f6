"""``app.conf`` caches resolved reads: every kind of write is seen by the next read."""

from __future__ import annotations

from caraway.config import Configuration


def test_reads_follow_changes_deletes_and_new_sources() -> None:
    conf = Configuration()
    assert conf.task_default_queue == "celery"

    conf.task_default_queue = "changed"
    assert conf["task_default_queue"] == "changed"

    conf.set_source({"task_default_queue": "from-source"})
    assert conf.task_default_queue == "changed"  # changes still win over the source
    del conf.task_default_queue
    assert conf.task_default_queue == "from-source"

    conf.set_source({"task_default_queue": "another"})
    assert conf.task_default_queue == "another"
    conf.update(task_default_queue="updated")
    assert conf.task_default_queue == "updated"


def test_fallback_settings_follow_the_setting_they_fall_back_to() -> None:
    conf = Configuration(broker_url="redis://localhost/1")
    assert conf.broker_read_url == "redis://localhost/1"

    conf.broker_url = "redis://localhost/2"
    assert conf.broker_read_url == "redis://localhost/2"
