"""``CELERY_BROKER_URL`` / ``CELERY_RESULT_BACKEND`` win over the code, as Celery reads them,
and bare engine names (``backend="rpc"``) mean that scheme's defaults."""

from __future__ import annotations

import uuid

import pytest

from caraway import Caraway
from caraway.cli.base import configure_app
from caraway.engines.base.disabled import DisabledBackend
from caraway.engines.memory.backend import MemoryBackend


def _memory_url() -> str:
    return f"memory://env-{uuid.uuid4().hex}"


def test_broker_from_the_environment_wins_over_code_and_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from_environment = _memory_url()
    monkeypatch.setenv("CELERY_BROKER_URL", from_environment)
    producer = Caraway("producer", broker=_memory_url(), set_as_current=False)
    producer.config_from_object({"broker_url": _memory_url()})
    reader = Caraway("reader", broker=from_environment, set_as_current=False)
    try:
        assert producer.conf.broker_url == from_environment
        producer.send_task("proj.add", (2, 3))
        # The message is in the broker the environment named, not in the code's.
        assert reader.broker.size("celery") == 1
    finally:
        producer.close()
        reader.close()


def test_without_the_variable_the_configured_broker_is_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    configured = _memory_url()
    app = Caraway("proj", set_as_current=False)
    app.config_from_object({"broker_url": configured})
    assert app.conf.broker_url == configured
    assert app.conf["BROKER_URL"] == configured


def test_the_variable_is_read_when_the_setting_is_resolved(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CELERY_BROKER_URL", "memory://from-env")
    app = Caraway("proj", broker="memory://code", set_as_current=False)
    assert app.conf.broker_url == "memory://from-env"
    assert app.conf.broker_read_url == "memory://from-env"  # falls back to broker_url
    monkeypatch.setenv("CELERY_BROKER_READ_URL", "memory://reads")
    app.conf.task_default_queue = "q"  # any change: reads are resolved again
    assert app.conf.broker_read_url == "memory://reads"
    assert app.conf["BROKER_URL"] == "memory://from-env"  # the old name too


def test_result_backend_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELERY_RESULT_BACKEND", "cache+memory://")
    app = Caraway("proj", broker=_memory_url(), backend="disabled://", set_as_current=False)
    try:
        assert isinstance(app.backend, MemoryBackend)
        app.backend.store_result("some-id", 42, "SUCCESS")
        assert app.AsyncResult("some-id").get(timeout=1) == 42
    finally:
        app.close()


def test_command_line_broker_beats_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """``caraway -b URL`` sets the variable, as ``celery -b`` does, so it wins."""
    monkeypatch.setenv("CELERY_BROKER_URL", "memory://from-env")
    # Set first so that monkeypatch restores it: configure_app sets it for real.
    monkeypatch.setenv("CELERY_RESULT_BACKEND", "unset")
    app = Caraway("proj", set_as_current=False)
    configure_app(app, "memory://from-cli", "cache+memory://", None)
    assert app.conf.broker_url == "memory://from-cli"
    assert app.conf.result_backend == "cache+memory://"


@pytest.mark.parametrize(
    ("bare", "cls"), [("disabled", DisabledBackend), ("memory", MemoryBackend)]
)
def test_bare_backend_names_mean_their_scheme(bare: str, cls: type) -> None:
    app = Caraway("proj", broker=_memory_url(), backend=bare, set_as_current=False)
    try:
        assert type(app.backend) is cls
        assert app.backend.url == f"{bare}://"
    finally:
        app.close()


def test_bare_rpc_backend_is_the_rpc_backend() -> None:
    pytest.importorskip("amqp")
    app = Caraway("proj", broker="amqp://guest@127.0.0.1//", backend="rpc", set_as_current=False)
    try:
        assert type(app.backend).__name__ == "RPCBackend"
        # Sending needs a reply queue, which only rpc:// asks for: the alias was understood.
        from caraway.engines.registry import backend_capabilities

        assert backend_capabilities("rpc").needs_reply_queue
    finally:
        app.close()
