"""``caraway migrate SOURCE DEST``: move waiting tasks from one broker to another.

What Celery's ``celery migrate`` does, over caraway's engines, so a team can move from Redis
to RabbitMQ (or out of the embedded SQLite file) without losing queued work. Messages keep
their headers, body, priority and ETA. Without ``--ack-messages`` the source keeps every
message (they are handed back when the copy is done: a dry run that leaves two copies);
with it, each is removed from the source only after the destination confirmed it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime

import click

from caraway.app import Caraway
from caraway.cli.base import comma_list, state_of
from caraway.engines.base.broker import Broker, Delivery, Outgoing
from caraway.engines.registry import create_broker
from caraway.routing import queue_names
from caraway.utils.text import mask_url

#: Messages moved per round trip.
BATCH = 100


@click.command()
@click.argument("source")
@click.argument("destination")
@click.option("-n", "--limit", type=click.IntRange(min=1), help="Move at most this many.")
@click.option(
    "-t", "--timeout", type=float, default=1.0, show_default=True,
    help="Stop once the source has given nothing for this many seconds.",
)  # fmt: skip
@click.option("-a", "--ack-messages", is_flag=True, help="Remove moved messages from SOURCE.")
@click.option(
    "-T", "--tasks", callback=comma_list, multiple=True, metavar="NAMES",
    help="Only tasks with these names (others stay in SOURCE).",
)  # fmt: skip
@click.option(
    "-Q", "--queues", callback=comma_list, multiple=True, metavar="QUEUES",
    help="Queues to read, 'source:dest' to rename (default: every queue the app knows).",
)  # fmt: skip
@click.option("-F", "--forever", is_flag=True, help="Keep moving new messages until Ctrl+C.")
@click.pass_context
def migrate(
    ctx: click.Context,
    source: str,
    destination: str,
    limit: int | None,
    timeout: float,
    ack_messages: bool,
    tasks: list[str],
    queues: list[str],
    forever: bool,
) -> None:
    """Move the tasks waiting in SOURCE's queues to DESTINATION (broker URLs)."""
    if forever and not ack_messages:
        raise click.UsageError("--forever needs --ack-messages: kept messages would be read again")
    app = state_of(ctx).app
    routes = _routes(queues or sorted(queue_names(app.conf.task_queues) or
                                      {app.conf.task_default_queue}))  # fmt: skip
    reader, writer = _broker_for(app, source), _broker_for(app, destination)
    try:
        moved = _move(reader, writer, routes, set(tasks), limit, timeout,
                      ack_messages, forever)  # fmt: skip
    finally:
        reader.close()
        writer.close()
    kept = "removed from" if ack_messages else "still in"
    click.echo(f"Migrated {moved} message(s) from {mask_url(source)} to "
               f"{mask_url(destination)} ({kept} the source).")  # fmt: skip


def _routes(queues: Sequence[str]) -> dict[str, str]:
    """``["a", "b:c"]`` -> ``{"a": "a", "b": "c"}``: source queue -> destination queue."""
    routes = {}
    for spec in queues:
        name, _, target = spec.partition(":")
        routes[name] = target or name
    return routes


def _broker_for(app: Caraway, url: str) -> Broker:
    """The engine for ``url`` with the broker settings of ``app`` (transport options, queues).

    Made from the URL itself, not through an app: ``$CELERY_BROKER_URL`` (which ``caraway -b``
    sets) names an app's broker over anything else, and would replace SOURCE or DESTINATION.
    """
    return create_broker(url, app._broker_options())


def _move(
    source: Broker,
    dest: Broker,
    routes: dict[str, str],
    names: set[str],
    limit: int | None,
    timeout: float,
    ack: bool,
    forever: bool,
) -> int:
    moved = 0
    held: list[Delivery] = []  # read, not ours to move (other tasks) or kept: given back at end
    try:
        while limit is None or moved < limit:
            want = BATCH if limit is None else min(BATCH, limit - moved)
            batch = source.fetch(list(routes), want, timeout)
            if not batch:
                if forever:
                    continue
                break
            chosen = [d for d in batch if not names or d.message.task_name in names]
            held += [d for d in batch if d not in chosen]
            dest.publish([_outgoing(d, routes[d.queue]) for d in chosen])
            if ack:
                source.ack([d.tag for d in chosen])
            else:
                held += chosen
            moved += len(chosen)
            for delivery in chosen:
                click.echo(f"{delivery.message.task_name}[{delivery.message.task_id}] -> "
                           f"{routes[delivery.queue]}")  # fmt: skip
    finally:
        if held:
            source.release([d.tag for d in held])
    return moved


def _outgoing(delivery: Delivery, queue: str) -> Outgoing:
    message = delivery.message
    eta = message.headers.get("eta")
    deliver_at = datetime.fromisoformat(eta).timestamp() if isinstance(eta, str) else None
    if deliver_at is not None and deliver_at <= time.time():
        deliver_at = None
    return Outgoing(message, queue, message.priority, deliver_at)
