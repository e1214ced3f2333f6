"""``caraway list bindings``: which queue is bound to which exchange with which key."""

from __future__ import annotations

import click

from caraway.cli.base import state_of
from caraway.routing import queue_table


@click.group(name="list")
def list_() -> None:
    """List what the broker holds (bindings)."""


@list_.command()
@click.pass_context
def bindings(ctx: click.Context) -> None:
    """The app's task queues and their bindings (queue, exchange, routing key)."""
    app = state_of(ctx).app
    table = queue_table(app.conf)
    bound = sorted(
        (table.declaration(queue) for queue in table.queues.values()), key=lambda b: b.queue
    )
    rows = [(b.queue, b.exchange, b.routing_key) for b in bound]
    width = max(20, *(len(text) for row in rows for text in row[:2])) + 2
    click.echo(f"{'Queue':<{width}}{'Exchange':<{width}}Routing Key")
    click.echo(f"{'-' * 5:<{width}}{'-' * 8:<{width}}{'-' * 11}")
    for queue, exchange, key in rows:
        click.echo(f"{queue:<{width}}{exchange:<{width}}{key}")
