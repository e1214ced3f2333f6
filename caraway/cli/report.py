"""``caraway report``: versions and the app's configuration, for bug reports."""

from __future__ import annotations

import click

from caraway.cli.base import state_of


@click.command()
@click.pass_context
def report(ctx: click.Context) -> None:
    """Print versions and the app's settings (passwords and secrets masked)."""
    click.echo(state_of(ctx).app.bugreport())
