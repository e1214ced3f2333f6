"""``caraway purge`` empties queues; ``caraway dead-letters`` lists messages set aside."""

from __future__ import annotations

from datetime import datetime

import click

from caraway.cli.base import comma_list, state_of
from caraway.routing import queue_names


@click.command()
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "-Q",
    "--queues",
    callback=comma_list,
    multiple=True,
    metavar="QUEUES",
    help="Queues to purge, comma separated (default: every queue the app knows).",
)
@click.option(
    "-X",
    "--exclude-queues",
    callback=comma_list,
    multiple=True,
    metavar="QUEUES",
    help="Queues not to purge.",
)
@click.pass_context
def purge(
    ctx: click.Context,
    force: bool,
    queues: list[str],
    exclude_queues: list[str],
) -> None:
    """Delete every message waiting in the app's queues. There is no undo.

    Messages a worker is running now are not touched.
    """
    app = state_of(ctx).app
    chosen = set(queues)
    known = queue_names(app.conf.task_queues) or {app.conf.task_default_queue}
    names = sorted((chosen or known) - set(exclude_queues))
    if not names:
        click.echo("No queues to purge.")
        return
    listed = ", ".join(names)
    if not force:
        click.confirm(
            f"Delete every message waiting in {_plural(len(names), 'queue')} {listed} "
            f"of {app.broker.describe()}? There is no undo (skip this question with -f)",
            abort=True,
        )
    counts = app.control.purge_queues(names)
    for name, count in counts.items():
        click.echo(f"Purged {_plural(count, 'message')} from queue {name}.")
    if len(counts) > 1:
        deleted = sum(counts.values())
        click.echo(f"Purged {_plural(deleted, 'message')} from {_plural(len(names), 'queue')}.")


@click.command("dead-letters")
@click.option(
    "--limit", type=click.IntRange(min=1), default=100, show_default=True, help="Most to list."
)
@click.pass_context
def dead_letters(ctx: click.Context, limit: int) -> None:
    """List the messages workers set aside, oldest first, and why.

    A worker sets a message aside when it cannot run it: it cannot decode it, no task of
    that name is registered, or a late-ack task was rejected or failed.
    """
    broker = state_of(ctx).app.broker
    letters = broker.dead_letters(limit)
    if not letters:
        click.echo(f"No dead letters in {broker.describe()}.")
        return
    for letter in letters:
        headers = letter.message.headers
        when = datetime.fromtimestamp(letter.failed_at).astimezone().isoformat(" ", "seconds")
        task = f"{headers.get('task', '?')}[{headers.get('id', '?')}]"
        click.echo(f"{when}  queue={letter.queue}  {task}")
        click.echo(f"    reason: {letter.reason}")
    more = " (the --limit; there may be more)" if len(letters) == limit else ""
    click.echo(f"{_plural(len(letters), 'dead letter')} in {broker.describe()}{more}.")


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"
