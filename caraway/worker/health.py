"""``--health-port``: HTTP probes for orchestrators (Kubernetes, Nomad, systemd helpers).

``GET /livez``  200 while the supervisor's consumer loop keeps turning (or is booting), 503
                when it has been stuck for ``STUCK_AFTER`` seconds or a pool slot died
                unreplaced: restart the worker.
``GET /readyz`` 200 while the worker consumes, 503 while booting, shutting down or while
                the broker cannot be reached.
``GET /metrics`` Prometheus metrics, with ``--metrics`` only (caraway.metrics).

The probes say ``ok`` or ``not ok`` and nothing else (no URL, host or version): the port
is often reachable by more than the orchestrator (``/metrics``, when asked for, names
hosts, tasks and queues). It binds every interface unless given an address
(``--health-address``): Kubernetes probes come to the pod's address.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

logger = logging.getLogger("caraway.worker")

#: A consumer loop turns at least every 0.2 s; a minute without a turn is not a slow broker.
STUCK_AFTER = 60.0


#: What a document path answers: its content type and body, made at each request.
Document = Callable[[], tuple[str, bytes]]


class HealthServer:
    """Answers the two probes (and any ``documents``, such as ``/metrics``) from a daemon
    thread; ``port=0`` picks a free port."""

    def __init__(
        self,
        port: int,
        live: Callable[[], bool],
        ready: Callable[[], bool],
        host: str = "",
        documents: Mapping[str, Document] | None = None,
    ) -> None:
        probes = {"/livez": live, "/healthz": live, "/readyz": ready}
        pages = dict(documents or {})
        paths = " ".join(["/livez", "/readyz", *pages])

        class Handler(BaseHTTPRequestHandler):
            server_version = "caraway"
            sys_version = ""

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                probe = probes.get(path)
                if path in pages:
                    self._page(path)
                elif probe is None:
                    self._answer(404, f"unknown path: use one of {paths}\n")
                elif probe():
                    self._answer(200, "ok\n")
                else:
                    self._answer(503, "not ok\n")

            def _page(self, path: str) -> None:
                try:
                    content_type, data = pages[path]()
                except Exception:  # a bug behind one page must not take the probes down
                    logger.exception("Could not answer GET %s", path)
                    self._answer(500, "error\n")
                    return
                self._send(200, content_type, data)

            def _answer(self, status: int, body: str) -> None:
                self._send(status, "text/plain; charset=utf-8", body.encode())

            def _send(self, status: int, content_type: str, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                """Probes every few seconds would drown the worker's log."""

        self._host = host
        self._paths = paths
        server_class = _IPv6Server if ":" in host else ThreadingHTTPServer
        self._server = server_class((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="caraway-health", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()
        host = self._server.server_address[0]
        where = host if self._host else "every interface"
        logger.info("Health probes on %s, port %d: %s", where, self.port, self._paths)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _IPv6Server(ThreadingHTTPServer):
    """For an IPv6 ``--health-address`` such as ``::1`` or ``::``."""

    address_family = socket.AF_INET6
