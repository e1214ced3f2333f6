"""``rediss://`` (TLS, with a password) and ``sentinel://`` against real servers this module
starts: a TLS Redis with a self-signed certificate, and a Redis master watched by a sentinel.

Each server is a ``redis-server`` of our own on a free port, so the shared Redis is untouched.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import services
from services import free_port

from caraway import Celery
from caraway.contrib.testing.worker import start_worker
from caraway.exceptions import OperationalError

PASSWORD = "s3cret:/@pass"  # URL-quoted below: the parser must unquote it
QUOTED_PASSWORD = "s3cret%3A%2F%40pass"


def _redis_server(*args: str, cwd: Path) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        services.missing("redis-server is not installed: cannot start a TLS or sentinel Redis")
    return subprocess.Popen(
        [binary, *args], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"{what} did not listen on {port} within 10 s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """(port, CA file) of a TLS-only Redis that asks for ``PASSWORD``."""
    folder = tmp_path_factory.mktemp("tls-redis")
    cert, key = folder / "redis.crt", folder / "redis.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    port = free_port()
    proc = _redis_server(
        "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert),
        "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
        "--tls-auth-clients", "no", "--requirepass", PASSWORD, "--save", "",
        "--appendonly", "no", cwd=folder,
    )  # fmt: skip
    try:
        _wait_for_port(port, proc, "the TLS redis-server")
        yield port, cert
    finally:
        _stop(proc)


def _round_trip(app: Celery) -> Any:
    @app.task(name="secure.add", shared=False)
    def add(x: int, y: int) -> int:
        return x + y

    with start_worker(app, pool="solo", perform_ping_check=False):
        return add.delay(20, 22).get(timeout=10)


def test_rediss_url_with_password_and_no_certificate_check(tls_redis: tuple[int, Path]) -> None:
    port, _ = tls_redis
    url = f"rediss://:{QUOTED_PASSWORD}@127.0.0.1:{port}/0?ssl_cert_reqs=none"
    app = Celery("tls", broker=url, backend=url, set_as_current=False)
    try:
        assert _round_trip(app) == 42
    finally:
        app.close()


def test_rediss_with_the_certificate_verified_through_broker_use_ssl(
    tls_redis: tuple[int, Path],
) -> None:
    port, ca = tls_redis
    url = f"rediss://:{QUOTED_PASSWORD}@127.0.0.1:{port}/1"
    ssl_options = {"ssl_cert_reqs": "required", "ssl_ca_certs": str(ca)}
    app = Celery(
        "tls", broker=url, backend=url, broker_use_ssl=ssl_options,
        redis_backend_use_ssl=ssl_options, set_as_current=False,
    )  # fmt: skip
    try:
        assert _round_trip(app) == 42
    finally:
        app.close()


def test_an_unverifiable_certificate_is_a_clear_error_with_the_password_masked(
    tls_redis: tuple[int, Path],
) -> None:
    port, _ = tls_redis
    url = f"rediss://:{QUOTED_PASSWORD}@127.0.0.1:{port}/0?ssl_cert_reqs=required"
    app = Celery("tls", broker=url, set_as_current=False)
    try:
        with pytest.raises(OperationalError) as failure:
            app.broker.size("celery")
        message = str(failure.value)
        assert "certificate verify failed" in message
        assert PASSWORD not in message
        assert QUOTED_PASSWORD not in message
    finally:
        app.close()


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The port of a sentinel watching a master of our own named ``caraway-test``."""
    folder = tmp_path_factory.mktemp("sentinel")
    master_port, sentinel_port = free_port(), free_port()
    master = _redis_server(
        "--port", str(master_port), "--save", "", "--appendonly", "no", cwd=folder
    )  # fmt: skip
    config = folder / "sentinel.conf"
    config.write_text(
        f"port {sentinel_port}\nbind 127.0.0.1\n"
        f"sentinel monitor caraway-test 127.0.0.1 {master_port} 1\n"
    )
    watcher = None
    try:
        _wait_for_port(master_port, master, "the master redis-server")
        watcher = _redis_server(str(config), "--sentinel", cwd=folder)
        _wait_for_port(sentinel_port, watcher, "the sentinel")
        yield sentinel_port
    finally:
        if watcher is not None:
            _stop(watcher)
        _stop(master)


def test_sentinel_url_finds_the_master_by_name(sentinel: int) -> None:
    url = f"sentinel://127.0.0.1:{free_port()};sentinel://127.0.0.1:{sentinel}"
    options = {"master_name": "caraway-test"}
    app = Celery(
        "sentinel", broker=url, backend=url, broker_transport_options=options,
        result_backend_transport_options=options, set_as_current=False,
    )  # fmt: skip
    try:
        assert _round_trip(app) == 42  # the first sentinel listed is down: the next answers
    finally:
        app.close()
