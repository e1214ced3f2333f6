"""The ``caraway`` command: global options, then one subcommand (``caraway --help`` lists them)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import click

from caraway.cli.base import CarawayGroup, CLIState, celery_flags
from caraway.cli.beat import beat
from caraway.cli.control import control, inspect, revoke, status
from caraway.cli.dashboard import dashboard, flower
from caraway.cli.demo import demo
from caraway.cli.events import events
from caraway.cli.lists import list_
from caraway.cli.migrate import migrate
from caraway.cli.multi import multi
from caraway.cli.queues import dead_letters, purge
from caraway.cli.report import report
from caraway.cli.shell import shell
from caraway.cli.tasks import call, result
from caraway.cli.upgrade import upgrade
from caraway.cli.worker import worker
from caraway.version import __version__

if TYPE_CHECKING:
    from caraway.app import Caraway

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@celery_flags("")
@click.group(cls=CarawayGroup, context_settings=CONTEXT_SETTINGS)
@click.option(
    "-A",
    "--app",
    "app_spec",
    envvar="CARAWAY_APP",
    show_envvar=True,
    metavar="APP",
    help="Your app: 'module', 'module:attr' or 'module.attr' (e.g. proj, proj.celery:app).",
)
@click.option(
    "-b",
    "--broker",
    envvar="CARAWAY_BROKER_URL",
    show_envvar=True,
    metavar="URL",
    help="Broker URL, overriding broker_url and $CELERY_BROKER_URL (e.g. redis://host/0).",
)
@click.option(
    "--result-backend",
    envvar="CARAWAY_RESULT_BACKEND",
    show_envvar=True,
    metavar="URL",
    help="Result backend URL, overriding result_backend and $CELERY_RESULT_BACKEND.",
)
@click.option(
    "--config",
    envvar="CARAWAY_CONFIG_MODULE",
    show_envvar=True,
    metavar="MODULE",
    help="Module to read settings from, as app.config_from_object(MODULE).",
)
@click.option(
    "--workdir",
    type=click.Path(exists=True, file_okay=False),
    help="Change to this directory before loading the app.",
)
@click.option(
    "-q", "--quiet", is_flag=True,
    help="Print only what was asked for: no worker banner, no multi progress lines.",
)  # fmt: skip
@click.version_option(__version__, "--version", prog_name="caraway")
@click.pass_context
def cli(
    ctx: click.Context,
    app_spec: str | None,
    broker: str | None,
    result_backend: str | None,
    config: str | None,
    workdir: str | None,
    quiet: bool,
) -> None:
    """caraway: a fast, Celery-compatible task queue.

    With no -A, commands use the default app: the embedded SQLite file
    ($CARAWAY_HOME/caraway.sqlite3 or ~/.local/share/caraway/caraway.sqlite3).
    Try `caraway demo` to watch a worker at work.
    """
    if workdir is not None:
        os.chdir(workdir)
    state = ctx.ensure_object(CLIState)
    state.app_spec = app_spec
    state.broker = broker
    state.result_backend = result_backend
    state.config = config
    state.quiet = quiet


for command in (
    worker,
    beat,
    demo,
    call,
    result,
    purge,
    dead_letters,
    report,
    inspect,
    control,
    status,
    revoke,
    events,
    list_,
    multi,
    migrate,
    upgrade,
    shell,
    dashboard,
    flower,
):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: parse ``argv`` (default ``sys.argv[1:]``) and exit."""
    cli.main(args=argv, prog_name="caraway")


def run_with_app(app: Caraway, argv: list[str]) -> None:
    """Run a command for an app already in hand (``app.worker_main``); returns when done.

    Errors are reported and exit as on the command line.
    """
    try:
        cli.main(args=argv, prog_name="caraway", obj=CLIState(app))
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
