"""The memcached backend without a server: Celery's URL spellings, expiry, client options,
and an unreachable server reported as such."""

from __future__ import annotations

import re
import time

import pytest
from services import free_port

from caraway import Caraway, states
from caraway.engines.memcached.backend import MemcachedBackend, memcached_expiry, parse_servers
from caraway.engines.registry import backend_capabilities, create_backend
from caraway.exceptions import ConfigurationWarning, ImproperlyConfigured, Unreachable


def _app(**conf: object) -> Caraway:
    return Caraway("memcached-unit", broker="memory://memcached-unit", set_as_current=False,
                   **conf)  # fmt: skip


@pytest.mark.parametrize(
    ("url", "servers"),
    [
        ("cache+memcached://127.0.0.1:11211/", [("127.0.0.1", 11211)]),
        ("cache+memcached://a:11211;b:11212/", [("a", 11211), ("b", 11212)]),
        ("cache+memcache://cache.local/", [("cache.local", 11211)]),
        ("cache+pylibmc://[::1]:11311/", [("::1", 11311)]),
        ("cache+memcached://", [("127.0.0.1", 11211)]),
    ],
)
def test_celerys_spellings_name_the_servers(url: str, servers: list[tuple[str, int]]) -> None:
    backend = create_backend(_app(), url)

    assert isinstance(backend, MemcachedBackend)
    assert parse_servers(url) == servers


def test_chords_are_not_counted_in_memcached() -> None:
    capabilities = backend_capabilities("cache+memcached://127.0.0.1:11211/")
    assert capabilities.chord_join == "none"
    assert capabilities.readable_by_workers  # so chord_unlock can join them


def test_a_bad_port_is_refused() -> None:
    with pytest.raises(ImproperlyConfigured, match="bad memcached port 'x'"):
        create_backend(_app(), "cache+memcached://host:x/")


def test_expiry_past_30_days_is_sent_as_a_unix_time() -> None:
    assert memcached_expiry(None) == 0
    assert memcached_expiry(0.2) == 1
    assert memcached_expiry(86400.0) == 86400
    sixty_days = memcached_expiry(60 * 86400)
    assert abs(sixty_days - (time.time() + 60 * 86400)) < 5


def test_pylibmcs_options_from_celerys_docs_are_ignored_with_a_warning() -> None:
    options = {"binary": True, "behaviors": {"tcp_nodelay": True}, "timeout": 3}

    with pytest.warns(ConfigurationWarning, match=r"\['behaviors', 'binary'\] are pylibmc's"):
        backend = create_backend(_app(cache_backend_options=options), "cache+memcached://h/")

    assert isinstance(backend, MemcachedBackend)


def test_an_option_pymemcache_does_not_know_is_an_error() -> None:
    with pytest.raises(ImproperlyConfigured, match="bad cache_backend_options"):
        create_backend(_app(cache_backend_options={"colour": "red"}), "cache+memcached://h/")


def test_an_unreachable_server_is_unreachable_not_pending() -> None:
    url = f"cache+memcached://127.0.0.1:{free_port()}/"
    backend = create_backend(_app(result_backend_always_retry=False), url)

    with pytest.raises(Unreachable, match=re.escape(f"memcached at {url} failed to read")):
        backend.get_task_meta("some-task")
    with pytest.raises(Unreachable):
        backend.store_result("some-task", 1, states.SUCCESS)
