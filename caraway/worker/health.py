"""``--health-port``: HTTP probes for orchestrators (Kubernetes, Nomad, systemd helpers).

``GET /livez``  200 while the supervisor's consumer loop keeps turning (or is booting), 503
                when it has been stuck for ``STUCK_AFTER`` seconds: restart the worker.
``GET /readyz`` 200 while the worker consumes, 503 while booting or shutting down.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

logger = logging.getLogger("caraway.worker")

#: A consumer loop turns at least every 0.2 s; a minute without a turn is not a slow broker.
STUCK_AFTER = 60.0


class HealthServer:
    """Answers the two probes from a daemon thread; ``port=0`` picks a free port."""

    def __init__(
        self, port: int, live: Callable[[], bool], ready: Callable[[], bool], host: str = ""
    ) -> None:
        probes = {"/livez": live, "/healthz": live, "/readyz": ready}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                probe = probes.get(self.path.split("?", 1)[0])
                if probe is None:
                    self._answer(404, "unknown probe: use /livez or /readyz\n")
                elif probe():
                    self._answer(200, "ok\n")
                else:
                    self._answer(503, "not ok\n")

            def _answer(self, status: int, body: str) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                """Probes every few seconds would drown the worker's log."""

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="caraway-health", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()
        logger.info("Health probes on port %d: /livez and /readyz", self.port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
