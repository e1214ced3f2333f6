"""RabbitMQ helpers for ``tests/worker/test_amqp_*.py``: a vhost per test module, rabbitmqctl,
a proxy that cuts connections."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import amqp
from services import rabbitmq_vhost, rabbitmqctl


@contextmanager
def rabbit_vhost(tag: str) -> Iterator[str]:
    """A fresh vhost on the shared server (deleted after, with all in it); yields its URL."""
    with rabbitmq_vhost(f"caraway-test-{tag}") as url:
        yield url


def vhost_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


def table(vhost: str, what: str, *columns: str) -> list[dict[str, str]]:
    """``rabbitmqctl list_<what>`` rows as dicts (``-q`` omits the header)."""
    out = rabbitmqctl(f"list_{what}", "-p", vhost, "--no-table-headers", *columns)
    return [dict(zip(columns, line.split("\t"), strict=True)) for line in out.splitlines()]


@contextmanager
def raw_channel(url: str) -> Iterator[Any]:
    """A plain py-amqp channel on the vhost, to look at the wire as a foreign client would."""
    conn = amqp.Connection(
        host=url.split("@")[1].split("/")[0], userid="guest", password="guest",
        virtual_host=vhost_of(url),
    )  # fmt: skip
    conn.connect()
    try:
        yield conn.channel()
    finally:
        conn.close()


class CuttableProxy:
    """A TCP proxy to RabbitMQ that the test owns: ``cut()`` drops every connection through
    it at one instant, as a network failure would; new connections pass again."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, name="test-proxy", daemon=True).start()

    def url(self, rabbit_url: str) -> str:
        """``rabbit_url`` (same vhost and user) through this proxy."""
        host = "{}:{}".format(*self.upstream)
        return rabbit_url.replace(host, f"127.0.0.1:{self.port}")

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
                server = socket.create_connection(self.upstream)
            except OSError:
                return
            with self._lock:
                self._open += [client, server]
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=_pump, args=(src, dst), daemon=True).start()

    def cut(self) -> float:
        """Close every connection now; returns the instant (``time.time()``)."""
        with self._lock:
            sockets, self._open = self._open, []
        cut_at = time.time()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        return cut_at

    def close(self) -> None:
        self.listener.close()
        self.cut()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
