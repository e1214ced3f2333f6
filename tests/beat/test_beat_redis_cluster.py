"""Two beat processes with the database scheduler on a Redis Cluster (the run's private
cluster, tests/redis_cluster.py): one holds the lease and sends every run once, to a queue
on another slot than the store's."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from beat_support import BeatProject, wait_until
from redis_cluster import PrivateCluster, shared_cluster

from caraway import Celery
from caraway.beat.stores import store_for_app

APP = """
from caraway import Celery

options = {{"global_keyprefix": "{prefix}"}}
app = Celery("beat_app", broker="{url}", backend="{url}", broker_transport_options=options,
             result_backend_transport_options=options)
app.conf.beat_lease_timeout = 0.6
app.conf.beat_schedule = {{"tick": {{"task": "beat_app.tick", "schedule": 0.5}}}}
"""


@pytest.fixture
def space() -> Iterator[tuple[PrivateCluster, str, Celery]]:
    cluster, prefix = shared_cluster(), f"btest-{uuid.uuid4().hex[:10]}:"
    options = {"global_keyprefix": prefix}
    reader = Celery("reader", broker=cluster.url, backend=cluster.url,
                    broker_transport_options=options, result_backend_transport_options=options,
                    set_as_current=False)  # fmt: skip
    yield cluster, prefix, reader
    reader.close()
    cluster.delete_prefixed(prefix)


def test_two_beats_on_a_cluster_send_each_run_once(
    beat_project: Callable[[str], BeatProject], space: tuple[PrivateCluster, str, Celery]
) -> None:
    cluster, prefix, reader = space
    project = beat_project(APP.format(url=cluster.url, prefix=prefix))
    for _ in range(2):
        project.spawn("beat", "-S", "database", "-l", "INFO")
    store = store_for_app(reader)

    def runs() -> int:
        state = store.states().get("tick")
        return state.total_run_count if state else 0

    wait_until(lambda: runs() >= 3, "three runs")
    for proc in project.processes:
        project.stop(proc)

    assert reader.broker.size("celery") == runs()  # every recorded run sent, none twice
    senders = [i for i in range(2) if "Sending due task" in project.log(i)]
    assert len(senders) == 1
