"""``caraway shell``: a Python shell with the app, its tasks and the canvas loaded, as
``celery shell`` gives (IPython when it is installed, else the standard one)."""

from __future__ import annotations

import code
import importlib.util
from typing import Any

import click

from caraway.canvas import chain, chord, chunks, group, signature, subtask, xmap, xstarmap
from caraway.cli.base import celery_flags, state_of


@celery_flags("shell")
@click.command()
@click.option("-I", "--ipython", "flavour", flag_value="ipython", help="Use IPython.")
@click.option("--python", "flavour", flag_value="python", help="Use the standard Python shell.")
@click.option(
    "-T", "--without-tasks", is_flag=True, help="Do not put the app's tasks in the namespace."
)
@click.pass_context
def shell(ctx: click.Context, flavour: str | None, without_tasks: bool) -> None:
    """A Python shell with `app` (also `celery`), the tasks by name and the canvas."""
    app = state_of(ctx).app
    app.import_task_modules()
    namespace = shell_namespace(app, with_tasks=not without_tasks)
    banner = f"caraway shell: app {app.main or '__main__'}; names: {', '.join(sorted(namespace))}"
    if flavour is None:
        flavour = "ipython" if importlib.util.find_spec("IPython") else "python"
    if flavour == "ipython":
        _ipython(namespace, banner)
    else:
        code.interact(banner=banner, local=namespace, exitmsg="")


def shell_namespace(app: Any, with_tasks: bool = True) -> dict[str, Any]:
    """``app`` and ``celery`` (the app), the canvas, and each task under its last name part."""
    namespace: dict[str, Any] = {
        "app": app, "celery": app, "Task": app.Task, "chain": chain, "chord": chord,
        "group": group, "chunks": chunks, "signature": signature, "subtask": subtask,
        "xmap": xmap, "xstarmap": xstarmap,
    }  # fmt: skip
    if with_tasks:
        for name, task in app.tasks.regular().items():
            namespace.setdefault(name.rpartition(".")[2], task)
    return namespace


def _ipython(namespace: dict[str, Any], banner: str) -> None:
    if importlib.util.find_spec("IPython") is None:
        raise click.UsageError("IPython is not installed: pip install ipython, or use --python")
    # Lazy, an optional package: only this flavour of the shell needs it.
    from IPython import start_ipython  # type: ignore[import-not-found]

    print(banner)
    start_ipython(argv=[], user_ns=namespace)
