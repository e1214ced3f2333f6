"""The ASGI app and the server: pages, Flower's API and static files under one prefix.

``serve`` adds ``/metrics`` (caraway.dashboard.metrics_route) when prometheus-client is
installed; more routes can be given as ``extra_routes``. Both sit behind the same
authentication as the pages. ``Background`` serves the same app from a thread of another
process (``caraway worker --dashboard``).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from caraway.dashboard import api, api_control, pages
from caraway.dashboard.metrics_route import metrics_routes
from caraway.dashboard.security import CSRFError, Guard
from caraway.dashboard.service import Dashboard
from caraway.exceptions import OperationalError

if TYPE_CHECKING:
    from caraway.app import Caraway
    from caraway.dashboard.config import DashboardConfig

STATIC = Path(__file__).parent / "static"


def _csrf_failed(request: Request, exc: Exception) -> Response:
    return PlainTextResponse(f"Forbidden: {exc}", 403)


def _broker_away(request: Request, exc: Exception) -> Response:
    """The broker or result store cannot be reached: say so (our errors mask passwords)."""
    return PlainTextResponse(f"Service unavailable: {exc}", 503)


def build_app(
    dashboard: Dashboard, extra_routes: Sequence[BaseRoute] = (), ingest: bool = True
) -> Starlette:
    """The web app over ``dashboard``; with ``ingest``, it listens to events while it runs."""

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        if ingest:
            dashboard.start()
        try:
            yield
        finally:
            if ingest:
                dashboard.stop()

    routes: list[BaseRoute] = [
        *pages.ROUTES, *api.ROUTES, *api_control.ROUTES, *extra_routes,
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]  # fmt: skip
    prefix = dashboard.config.url_prefix
    web = Starlette(
        routes=[Mount(prefix, routes=routes)] if prefix else routes,
        middleware=[Middleware(Guard, config=dashboard.config)],
        exception_handlers={CSRFError: _csrf_failed, OperationalError: _broker_away},
        lifespan=lifespan,
    )
    web.state.dashboard = dashboard
    return web


def serve(app: Caraway, config: DashboardConfig, extra_routes: Sequence[BaseRoute] = ()) -> None:
    """Run the dashboard until interrupted (what ``caraway dashboard`` does)."""
    config.check()
    dashboard = Dashboard(app, config)
    web = build_app(dashboard, [*metrics_routes(dashboard), *extra_routes])
    uvicorn.run(web, host=config.address, port=config.port, log_level="warning")


class Background:
    """The dashboard served by a thread of another process (``caraway worker --dashboard``).

    The port is bound here, so a taken port fails before the worker starts; serving begins
    with ``start``, which the worker calls once ready (after its pool forked: the children
    get no copy of a running server).
    """

    def __init__(self, app: Caraway, config: DashboardConfig) -> None:
        config.check()
        family = socket.AF_INET6 if ":" in config.address else socket.AF_INET
        self.socket = socket.create_server((config.address, config.port), family=family)
        self.dashboard = Dashboard(app, config)
        web = build_app(self.dashboard, metrics_routes(self.dashboard))
        self.server = uvicorn.Server(uvicorn.Config(web, log_level="warning"))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, name="caraway-dashboard",
            daemon=True,
        )  # fmt: skip

    @property
    def port(self) -> int:
        return int(self.socket.getsockname()[1])

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Stop serving and listening (the ingest thread stops with the app's lifespan)."""
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(10)
        self.socket.close()
