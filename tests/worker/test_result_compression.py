"""``result_compression``: results stored compressed in Celery 5.7's format on Redis, read by
caraway and by Celery both ways, and never applied where Celery reads stored fields (SQL)."""

from __future__ import annotations

import json
import uuid
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import celery
import pytest
import redis
from services import require
from worker_support import WAIT

from caraway import Celery
from caraway.engines.base.compressed import MAGIC
from caraway.exceptions import ConfigurationWarning, ImproperlyConfigured


@pytest.fixture
def backend_url() -> Iterator[str]:
    """Results db 1 on the shared Redis; every key the test made is removed after."""
    host, port = require("redis")
    url = f"redis://{host}:{port}/1"
    made: list[str] = []
    yield url
    client = redis.Redis(host=host, port=port, db=1)
    for key in client.scan_iter(match="celery-task-meta-wtest-compress-*"):
        made.append(key.decode())
    if made:
        client.delete(*made)
    client.close()


def _task_id() -> str:
    return f"wtest-compress-{uuid.uuid4().hex}"


def test_a_result_is_stored_gzipped_and_read_by_caraway_and_celery(
    backend_url: str, start_worker: Callable[..., Any]
) -> None:
    app = Celery(
        "compress", broker=f"memory://compress-{uuid.uuid4().hex}", backend=backend_url,
        result_compression="gzip",
    )  # fmt: skip

    @app.task(name="compress.words")
    def words(count: int) -> str:
        return "caraway " * count

    start_worker(app, concurrency=1)
    task_id = _task_id()
    result = words.apply_async((1000,), task_id=task_id)

    assert result.get(timeout=WAIT) == "caraway " * 1000
    raw = redis.Redis.from_url(backend_url).get(f"celery-task-meta-{task_id}")
    assert raw is not None
    header = MAGIC + b"application/x-gzip\x00"
    assert raw.startswith(header)
    assert len(raw) < 1000  # 8 kB of text, compressed
    # kombu's "gzip" is a zlib stream under the gzip mime type; so is ours
    assert json.loads(zlib.decompress(raw[len(header) :]))["status"] == "SUCCESS"

    theirs = celery.Celery("theirs", backend=backend_url, set_as_current=False)
    assert theirs.AsyncResult(task_id).get(timeout=WAIT) == "caraway " * 1000
    app.close()


def test_caraway_reads_what_celery_stored_compressed_even_with_compression_off(
    backend_url: str,
) -> None:
    theirs = celery.Celery(
        "theirs", backend=backend_url, set_as_current=False,
        config_source={"result_compression": "bzip2"},
    )  # fmt: skip
    task_id = _task_id()
    theirs.backend.store_result(task_id, {"answer": 42}, "SUCCESS")

    ours = Celery("ours", broker="memory://compress-read", backend=backend_url)
    assert ours.AsyncResult(task_id).get(timeout=WAIT) == {"answer": 42}
    ours.close()


def test_an_unknown_method_fails_at_setup_naming_the_known_ones(backend_url: str) -> None:
    app = Celery("bad", broker="memory://compress-bad", backend=backend_url)
    app.conf.result_compression = "gzipp"
    with pytest.raises(ImproperlyConfigured, match="gzip"):
        _ = app.backend


def test_the_sql_backend_stores_uncompressed_and_says_so() -> None:
    app = Celery("sql", broker="memory://compress-sql", backend="db+sqlite:///:memory:")
    app.conf.result_compression = "gzip"
    with pytest.warns(ConfigurationWarning, match="result_compression='gzip' is ignored"):
        assert app.backend.compression is None


def test_a_stored_compressed_success_is_never_replaced_by_a_writer_without_compression(
    backend_url: str,
) -> None:
    task_id = _task_id()
    compressing = Celery("zip", broker="memory://compress-zip", backend=backend_url)
    compressing.conf.result_compression = "zlib"
    compressing.backend.store_result(task_id, "first", "SUCCESS")
    plain = Celery("plain", broker="memory://compress-plain", backend=backend_url)

    plain.backend.store_result(task_id, "late duplicate", "SUCCESS")  # a redelivered run
    plain.backend.store_result(task_id, None, "STARTED")

    assert plain.AsyncResult(task_id).get(timeout=WAIT) == "first"
    compressing.close()
    plain.close()
