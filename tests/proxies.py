"""A TCP proxy a test owns, between a client and a real server: the network faults of the
fault and worker suites (a cut, a partition, a reply that never arrives) without touching the
shared server."""

from __future__ import annotations

import socket
import struct
import threading
import time


class TcpProxy:
    """Relays connections to ``upstream``. ``sever()`` closes every relayed connection at one
    instant (both sides see a reset) and may turn new ones away for a while, as a network
    partition would; ``drop_next_reply()`` cuts a connection instead of passing on the next
    bytes the server sends, so a command runs on the server and its answer never arrives."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._refuse_until = 0.0
        self._drop_reply = threading.Event()
        threading.Thread(target=self._accept, name="test-proxy", daemon=True).start()

    def url(self, service_url: str) -> str:
        """``service_url`` (same path, user and options) through this proxy."""
        return service_url.replace("{}:{}".format(*self.upstream), f"127.0.0.1:{self.port}")

    def sever(self, refuse_for: float = 0.0) -> float:
        """Drop every relayed connection now and refuse new ones for ``refuse_for`` seconds;
        returns the instant of the cut (``time.time()``)."""
        with self._lock:
            self._refuse_until = time.monotonic() + refuse_for
            conns, self._open = self._open, []
        cut_at = time.time()
        for conn in conns:
            _reset(conn)
        return cut_at

    def drop_next_reply(self) -> None:
        self._drop_reply.set()

    def close(self) -> None:
        self.listener.close()
        self.sever()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            if time.monotonic() < self._refuse_until:
                _reset(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5.0)
                server.settimeout(None)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._open += [client, server]
            for source, sink, replies in ((client, server, False), (server, client, True)):
                threading.Thread(
                    target=self._pump, args=(source, sink, replies), daemon=True
                ).start()

    def _pump(self, source: socket.socket, sink: socket.socket, replies: bool) -> None:
        """Copy bytes one way until either side goes (or a reply is to be dropped); then
        close both."""
        try:
            while data := source.recv(65536):
                if replies and self._drop_reply.is_set():
                    self._drop_reply.clear()
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            _reset(source)
            _reset(sink)


def _reset(conn: socket.socket) -> None:
    """Close with an RST (linger 0), as a cut looks to the peer; ``shutdown`` first wakes
    the pump thread blocked reading it, whose exit releases the socket."""
    try:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.shutdown(socket.SHUT_RD)
    except OSError:
        pass
    conn.close()
