"""Two real worker processes per broker (Redis, RabbitMQ), shared by every test here."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from remote_support import Cluster
from services import delete_redis_prefixed, rabbitmq_vhost, require

_FAILED = pytest.StashKey[bool]()
_CLUSTERS: list[Cluster] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: object) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when == "call" and report.failed:
        item.stash[_FAILED] = True


@pytest.fixture(autouse=True)
def _print_worker_logs_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if request.node.stash.get(_FAILED, False):
        for cluster in _CLUSTERS:
            print(cluster.logs())


@pytest.fixture(scope="session", params=["redis", "rabbitmq"])
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """Workers ``alpha`` (queue alpha, one thread, task events on) and ``beta`` (queue
    beta, two threads), started in parallel."""
    root: Path = tmp_path_factory.mktemp(f"remote-{request.param}")
    if request.param == "redis":
        host, port = require("redis")
        prefix = f"remote-{uuid.uuid4().hex[:10]}:"
        made = Cluster(root, f"redis://{host}:{port}/0", prefix)
        yield from _run(made, request.param)
        delete_redis_prefixed(prefix, dbs=(0,))
    else:
        with rabbitmq_vhost("caraway-remote") as url:
            yield from _run(Cluster(root, url, None), request.param)


def _run(made: Cluster, kind: str) -> Iterator[Cluster]:
    made.kind = kind  # type: ignore[attr-defined]
    _CLUSTERS.append(made)
    try:
        made.start("alpha", "-Q", "alpha", "-c", "1", "-E", ready=False)
        made.start("beta", "-Q", "beta", "-c", "2", ready=False)
        for node in made.nodes:
            node.wait_ready()
        yield made
    finally:
        _CLUSTERS.remove(made)
        made.close()
