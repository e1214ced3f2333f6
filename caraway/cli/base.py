"""What every command shares: the app named by ``-A``, the options that change its
configuration, comma-separated lists, and caraway's errors shown as plain messages.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

import click
from click.core import ParameterSource

from caraway.app import Caraway
from caraway.cli.audit import Flag, refused_commands, rows_for
from caraway.config import ENVIRONMENT
from caraway.current import get_current_app
from caraway.exceptions import CarawayError
from caraway.settings import Status

if TYPE_CHECKING:
    from caraway.app import Caraway

#: Attributes of a module that ``-A module`` looks at first, in Celery's order.
APP_ATTRIBUTES = ("app", "celery")
APP_OPTION_HINT = "'-A' / '--app'"


class AppNotFound(click.BadParameter):
    """``-A`` names nothing that holds an app; the message says what was tried."""

    def __init__(self, message: str) -> None:
        super().__init__(message, param_hint=APP_OPTION_HINT)


class CLIState:
    """The options of the ``caraway`` group, and the app they name, loaded on first use.

    Loading lazily keeps ``caraway -A proj worker --help`` from importing the project.
    """

    def __init__(self, app: Caraway | None = None) -> None:
        self.app_spec: str | None = None
        self.broker: str | None = None
        self.result_backend: str | None = None
        self.config: str | None = None
        self.quiet = False
        self._preloaded = app
        self._app: Caraway | None = None

    @property
    def app_given(self) -> bool:
        return self._preloaded is not None or self.app_spec is not None

    @property
    def app(self) -> Caraway:
        if self._app is None:
            if self._preloaded is not None:
                app = self._preloaded
            elif self.app_spec is not None:
                app = find_app(self.app_spec)
            else:
                app = get_current_app()
            configure_app(app, self.broker, self.result_backend, self.config)
            self._app = app
        return self._app


def configure_app(
    app: Caraway, broker: str | None, result_backend: str | None, config: str | None
) -> None:
    """Apply ``--config``, then ``-b`` and ``--result-backend``.

    These two win over everything, as in Celery: they set ``CELERY_BROKER_URL`` /
    ``CELERY_RESULT_BACKEND``, which the configuration reads first (and pool children and
    ``--detach`` inherit).
    """
    if config is not None:
        app.config_from_object(config)
        app.conf.get("broker_url")  # read the module now, so a bad --config fails here
    for name, value in (("broker_url", broker), ("result_backend", result_backend)):
        if value is not None:
            os.environ[ENVIRONMENT[name]] = value
            app.conf[name] = value  # a change: cached reads are resolved again
    if broker is not None or result_backend is not None or config is not None:
        app.close()  # engines made before the override would keep the old URLs


#: Options of ``caraway`` itself that Celery 4 took after the subcommand too.
GLOBAL_OPTIONS = frozenset({"-A", "--app", "-b", "--broker", "--result-backend", "--config"})
#: Celery commands caraway does not have, and what to use instead (from caraway.cli.audit).
CELERY_ONLY_COMMANDS = refused_commands()


class CarawayGroup(click.Group):
    """A group whose commands report caraway's errors as ``Error: <message>``, exit 1."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else None
        if name in CELERY_ONLY_COMMANDS and self.get_command(ctx, name) is None:
            raise click.UsageError(
                f"caraway has no '{name}' command: {CELERY_ONLY_COMMANDS[name]}.", ctx
            )
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CarawayError as exc:
            raise click.ClickException(str(exc)) from exc
        except click.NoSuchOption as exc:
            if exc.option_name not in GLOBAL_OPTIONS or exc.ctx is None:
                raise
            raise misplaced_option(exc.option_name, exc.ctx) from None


def misplaced_option(option: str, ctx: click.Context) -> click.UsageError:
    """``caraway worker -A proj``: refused as Celery 5 refuses it, saying where it goes."""
    command = ctx.info_name or "COMMAND"
    return click.UsageError(
        f"{option} is an option of 'caraway' itself, so it goes before the command: "
        f"caraway {option} <value> {command} ... (Celery 5 also stopped taking it after the "
        f"command, e.g. `celery {command} {option} proj` became `celery {option} proj {command}`).",
        ctx,
    )


CommandT = TypeVar("CommandT", bound=click.Command)


def celery_flags(command: str) -> Callable[[CommandT], CommandT]:
    """Give a command Celery's options that caraway refuses or ignores (caraway.cli.audit).

    Each one is hidden from ``--help`` and answered as it is parsed: a refused one stops
    with the reason (exit 2), an ignored one warns once on stderr and goes on. Spellings the
    command already uses for its own options are left to them.
    """

    def add(cmd: CommandT) -> CommandT:
        taken = {s for param in cmd.params for s in (*param.opts, *param.secondary_opts)}
        for row in rows_for(command):
            free = [spelling for spelling in row.spellings if spelling not in taken]
            if row.status is not Status.WORKS and free:
                cmd.params.append(_celery_option(row, free))
        return cmd

    return add


def _celery_option(row: Flag, spellings: list[str]) -> click.Option:
    name = "celery_" + max(spellings, key=len).lstrip("-").replace("-", "_")

    def answer(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if ctx.get_parameter_source(name) is not ParameterSource.COMMANDLINE:
            return
        if row.status is Status.REFUSED:
            raise click.UsageError(refusal(row), ctx)
        click.echo(ignored_warning(row), err=True)

    return click.Option(
        [name, *spellings], is_flag=not row.takes_value, hidden=True, expose_value=False,
        is_eager=True, callback=answer,
    )  # fmt: skip


def refusal(row: Flag) -> str:
    """What a refused Celery option or command says."""
    return f"caraway does not take Celery's {row.label}: {row.reason}."


def ignored_warning(row: Flag) -> str:
    """What an ignored Celery option says, once, before the command goes on."""
    return f"Warning: Celery's {row.label} changes nothing in caraway: {row.reason}."


def comma_list(ctx: click.Context, param: click.Parameter, values: Any) -> list[str]:
    """Option callback: ``-Q a,b -Q c`` (an option with ``multiple=True``) → ``['a', 'b', 'c']``."""
    if isinstance(values, str):
        values = [values]
    return [item.strip() for value in values or () for item in value.split(",") if item.strip()]


def state_of(ctx: click.Context) -> CLIState:
    """The group's state; a command invoked on its own (embedded in another CLI) gets one."""
    return ctx.ensure_object(CLIState)


# --- finding the app ---------------------------------------------------------------------------


def find_app(spec: str) -> Caraway:
    """The app ``-A`` names: ``module:attr``, ``module.attr`` or ``module``.

    For a module: its ``app`` or ``celery`` attribute, else its ``celery`` submodule
    (``proj`` → ``proj.celery``), else the single app among its attributes. The current
    directory goes on ``sys.path`` first: console scripts do not put it there, yet
    ``caraway -A proj worker`` is run from the project folder.
    """
    _put_cwd_on_path()
    module_name, colon, attr = spec.partition(":")
    if colon:
        if not module_name or not attr:
            raise AppNotFound(f"{spec!r} is not 'module:attribute', e.g. -A proj.celery:app")
        return _as_app(_attribute(_import(module_name, spec), attr, spec), spec)
    try:
        module = _import(spec, spec)
    except AppNotFound:
        parent, dot, attr = spec.rpartition(".")
        if not dot:
            raise
        try:
            holder = _import(parent, spec)
        except AppNotFound:
            raise AppNotFound(_no_module_message(spec, spec)) from None
        if not hasattr(holder, attr):
            raise AppNotFound(
                f"no module named {spec!r}, and module {parent!r} has no attribute {attr!r}"
            ) from None
        return _as_app(getattr(holder, attr), spec)
    found = _app_in_module(module)
    if found is None:
        raise AppNotFound(
            f"no app found in module {spec!r}. Looked for an attribute 'app' or 'celery', "
            f"a submodule {spec + '.celery'!r} and any Caraway/Celery instance in the "
            f"module. Name it explicitly: -A {spec}:<variable>"
        )
    return found


def _app_in_module(module: ModuleType) -> Caraway | None:
    for name in APP_ATTRIBUTES:
        value = getattr(module, name, None)
        if isinstance(value, Caraway):
            return value
    if hasattr(module, "__path__"):
        submodule = _import_optional(f"{module.__name__}.celery")
        if submodule is not None:
            found = _app_in_module(submodule)
            if found is not None:
                return found
    apps: dict[int, tuple[str, Caraway]] = {}
    for name, value in vars(module).items():
        if isinstance(value, Caraway):
            apps.setdefault(id(value), (name, value))
    if len(apps) > 1:
        names = ", ".join(sorted(name for name, _ in apps.values()))
        raise AppNotFound(
            f"module {module.__name__!r} holds several apps ({names}); choose one with "
            f"-A {module.__name__}:<variable>"
        )
    return next(iter(apps.values()))[1] if apps else None


def _as_app(value: Any, spec: str) -> Caraway:
    if isinstance(value, ModuleType):
        found = _app_in_module(value)
        if found is not None:
            return found
    if isinstance(value, Caraway):
        return value
    raise AppNotFound(f"-A {spec} names {value!r}, not a Caraway/Celery app")


def _attribute(module: ModuleType, dotted: str, spec: str) -> Any:
    value: Any = module
    for part in dotted.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise AppNotFound(
                f"module {module.__name__!r} has no attribute {dotted!r} (from -A {spec})"
            ) from None
    return value


def _import(name: str, spec: str) -> ModuleType:
    """Import ``name``; its absence (not that of something it imports) is ``AppNotFound``."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if not _is_missing(name, exc):
            raise  # the module exists but imports something missing: show the traceback
        raise AppNotFound(_no_module_message(name, spec)) from None


def _import_optional(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if _is_missing(name, exc):
            return None
        raise


def _is_missing(name: str, exc: ModuleNotFoundError) -> bool:
    missing = exc.name or ""
    return name == missing or name.startswith(missing + ".")


def _no_module_message(name: str, spec: str) -> str:
    return (
        f"cannot find module {name!r} (from -A {spec}): it is not on sys.path nor in the "
        f"current directory {os.getcwd()}. Check the spelling, run caraway from the folder "
        "that contains your project, or pass --workdir."
    )


def _put_cwd_on_path() -> None:
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
