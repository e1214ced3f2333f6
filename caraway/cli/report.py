"""``caraway report``: versions and the app's configuration, for bug reports."""

from __future__ import annotations

import platform

import click

from caraway.cli.base import state_of
from caraway.engines.registry import DEFAULT_BROKER_URL
from caraway.exceptions import CarawayError
from caraway.utils.text import mask_url
from caraway.version import __version__


@click.command()
@click.pass_context
def report(ctx: click.Context) -> None:
    """Print versions and the app's settings (passwords and secrets masked)."""

    app = state_of(ctx).app
    engines = []
    for label, make, url in (
        ("transport", lambda: app.broker, app.conf.broker_url or DEFAULT_BROKER_URL),
        ("results", lambda: app.backend, app.conf.result_backend or "(as the broker)"),
    ):
        try:
            described = make().describe()
        except CarawayError as exc:
            described = f"{mask_url(str(url))} ({exc})"
        engines.append(f"{label}: {described}")
    click.echo(
        f"software -> caraway:{__version__} py:{platform.python_version()} "
        f"({platform.python_implementation()})\n"
        f"platform -> system:{platform.system()} arch:{platform.machine()}\n"
        f"app -> {app.main or '__main__'}\n" + "\n".join(engines) + "\n"
    )
    click.echo(app.conf.humanize())
