"""``caraway list bindings``: which queue is bound to which exchange with which key."""

from __future__ import annotations

import click

from caraway.cli.base import state_of
from caraway.routing import queue_names


@click.group(name="list")
def list_() -> None:
    """List what the broker holds (bindings)."""


@list_.command()
@click.pass_context
def bindings(ctx: click.Context) -> None:
    """The app's task queues and their bindings (queue, exchange, routing key)."""
    app = state_of(ctx).app
    names = sorted(queue_names(app.conf.task_queues) or {app.conf.task_default_queue})
    rows = [(name, name, name) for name in names]
    width = max(20, *(len(name) for name in names)) + 2
    click.echo(f"{'Queue':<{width}}{'Exchange':<{width}}Routing Key")
    click.echo(f"{'-' * 5:<{width}}{'-' * 8:<{width}}{'-' * 11}")
    for queue, exchange, key in rows:
        click.echo(f"{queue:<{width}}{exchange:<{width}}{key}")
