"""``caraway dashboard`` (alias ``caraway flower``): serve the web dashboard and Flower's API.

Flower's flags and environment variables are accepted where they apply, so a guide's
``celery -A proj flower --port=5555 --basic-auth=user:pass`` works with ``caraway``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import click

from caraway.cli.base import state_of
from caraway.dashboard.config import (
    DEFAULT_ADDRESS,
    DEFAULT_PORT,
    DashboardConfig,
    default_store_path,
    normalise_prefix,
    parse_basic_auth,
)
from caraway.dashboard.store import Limits
from caraway.exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    from caraway.app import Caraway
    from caraway.dashboard.server import Background

MISSING_EXTRA = 'the dashboard needs its extra ({} is missing): pip install "caraway[dashboard]"'


def _env(name: str) -> list[str]:
    """Ours first, then Flower's and Celery's spellings of the same setting."""
    return [f"CARAWAY_DASHBOARD_{name}", f"FLOWER_{name}", f"CELERY_FLOWER_{name}"]


@click.command()
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    envvar=_env("PORT"),
    help="Port to listen on.",
)
@click.option(
    "--address",
    default=DEFAULT_ADDRESS,
    show_default=True,
    envvar=_env("ADDRESS"),
    help="Address to listen on; any other than loopback needs authentication.",
)
@click.option(
    "--url-prefix",
    default="",
    envvar=_env("URL_PREFIX"),
    help="Serve under this path (behind a reverse proxy), e.g. /dashboard.",
)
@click.option(
    "--basic-auth",
    envvar=_env("BASIC_AUTH"),
    metavar="USER:PASS[,USER:PASS]",
    help="Ask for one of these user:password pairs.",
)
@click.option(
    "--auth-token",
    envvar=_env("AUTH_TOKEN"),
    metavar="TOKEN",
    help="Accept 'Authorization: Bearer TOKEN' (for scripts using the API).",
)
@click.option(
    "--read-only",
    is_flag=True,
    envvar=_env("READ_ONLY"),
    help="Show everything, change nothing (no revoke, no worker actions).",
)
@click.option(
    "--db",
    "store_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar=_env("DB"),
    help=f"The dashboard's history file [default: {default_store_path()}].",
)
@click.option(
    "--max-tasks",
    type=click.IntRange(min=1),
    default=Limits.max_tasks,
    show_default=True,
    envvar=_env("MAX_TASKS"),
    help="Tasks kept in the history.",
)
@click.option(
    "--max-age",
    type=click.FloatRange(min=1),
    default=Limits.max_age,
    show_default=True,
    envvar=_env("MAX_AGE"),
    help="Seconds of history kept.",
)
@click.pass_context
def dashboard(
    ctx: click.Context, port: int, address: str, url_prefix: str, basic_auth: str | None,
    auth_token: str | None, read_only: bool, store_path: Path | None, max_tasks: int,
    max_age: float,
) -> None:  # fmt: skip
    """Serve the dashboard: tasks live, workers, queues, dead letters, and Flower's HTTP API.

    Task events need workers started with -E (or `caraway control enable_events`).
    """
    try:
        config = DashboardConfig(
            address=address, port=port, url_prefix=normalise_prefix(url_prefix),
            basic_auth=parse_basic_auth(basic_auth), auth_token=auth_token or None,
            read_only=read_only, store_path=store_path or default_store_path(),
            limits=Limits(max_tasks, max_age),
        )  # fmt: skip
        config.check()
    except ImproperlyConfigured as exc:
        raise click.UsageError(str(exc)) from None
    try:
        # Lazy, the web stack is an extra: the rest of the CLI works without it.
        from caraway.dashboard.server import serve
    except ImportError as exc:
        raise click.UsageError(MISSING_EXTRA.format(exc.name)) from None
    app = state_of(ctx).app
    click.echo(f"-> caraway dashboard on http://{address}:{port}{config.url_prefix}/ "
               f"({app.broker.describe()})")  # fmt: skip
    serve(app, config)


flower = click.Command(
    "flower", params=dashboard.params, callback=dashboard.callback,
    help="The dashboard under Flower's name (see `caraway dashboard --help`).",
)  # fmt: skip


def _from_env(env: Mapping[str, str], name: str) -> str | None:
    return next((env[key] for key in _env(name) if env.get(key)), None)


def embedded_config(
    port: int, address: str, env: Mapping[str, str] = os.environ
) -> DashboardConfig:
    """``caraway worker --dashboard``'s settings: port and address from its options, the rest
    from the environment variables ``caraway dashboard`` reads."""
    store = _from_env(env, "DB")
    return DashboardConfig(
        address=address, port=port, url_prefix=normalise_prefix(_from_env(env, "URL_PREFIX") or ""),
        basic_auth=parse_basic_auth(_from_env(env, "BASIC_AUTH")),
        auth_token=_from_env(env, "AUTH_TOKEN"),
        read_only=(_from_env(env, "READ_ONLY") or "").lower() in ("1", "true", "yes", "on"),
        store_path=Path(store) if store else default_store_path(),
        limits=Limits(int(_from_env(env, "MAX_TASKS") or Limits.max_tasks),
                      float(_from_env(env, "MAX_AGE") or Limits.max_age)),
    )  # fmt: skip


def embedded_dashboard(app: Caraway, port: int, address: str) -> Background:
    """The dashboard a worker serves beside itself, its port bound (not yet serving); a bad
    setup, a missing extra or a taken port is a usage error naming the fix."""
    try:
        # Lazy, the web stack is an extra: the rest of the CLI works without it.
        from caraway.dashboard.server import Background
    except ImportError as exc:
        raise click.UsageError(MISSING_EXTRA.format(exc.name)) from None
    try:
        return Background(app, embedded_config(port, address))
    except (ImproperlyConfigured, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    except OSError as exc:
        raise click.UsageError(
            f"the dashboard cannot listen on {address}:{port}: {exc.strerror or exc}"
            " (choose another with --dashboard-port)"
        ) from None
