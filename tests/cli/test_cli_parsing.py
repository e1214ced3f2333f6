"""The command line in this process (click's runner): parsing, -A lookup, overrides, errors."""

from __future__ import annotations

import os

import pytest
from cli_support import Project
from click.testing import CliRunner, Result

from caraway import __version__
from caraway.cli.main import cli

COMMANDS = ("worker", "demo", "call", "result", "purge", "dead-letters", "report")


def invoke(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


def test_version_and_the_list_of_commands() -> None:
    assert invoke("--version").output == f"caraway, version {__version__}\n"
    listing = invoke("--help").output
    assert all(f"  {name} " in listing for name in COMMANDS)


def test_a_misspelled_command_gets_a_suggestion() -> None:
    result = invoke("wrker")
    assert result.exit_code == 2
    assert "No such command 'wrker'. Did you mean 'worker'?" in result.output


def test_celery_pools_caraway_lacks_are_refused_with_the_choices() -> None:
    result = invoke("worker", "-P", "custom")
    assert result.exit_code == 2
    expected = "caraway has no custom pool yet. Available pools: asyncio, eventlet, gevent,"
    assert expected in " ".join(result.output.split())


def test_a_misspelled_pool_gets_a_suggestion() -> None:
    result = invoke("worker", "--pool", "thread")
    assert result.exit_code == 2
    assert "unknown pool 'thread'. Did you mean 'threads'?" in result.output


def test_worker_help_says_what_the_celery_flags_do_here() -> None:
    text = " ".join(invoke("worker", "--help").output.split())
    assert "\n  --without-gossip" not in invoke("worker", "--help").output  # warned, not offered
    assert "Celery's flags that change nothing here (--without-gossip, ...) warn" in text
    assert "--without-mingle Do not ask the other workers for revoked task ids" in text
    assert "fair (a task goes to a slot only when it is free) is what caraway does" in text
    assert "no effect" not in text
    assert "-E, --task-events, --events Send task events (for monitors)." in text
    assert "--without-heartbeat Send no worker events (heartbeats)." in text


PACKAGE_SOURCES = {
    "attribute app": ("{m}", "from caraway import Celery\napp = Celery('{m}')\n"),
    "attribute celery": ("{m}", "from caraway import Celery\ncelery = Celery('{m}')\n"),
    "module:attr": ("{m}:mine", "from caraway import Celery\nmine = Celery('{m}')\n"),
    "module.attr": ("{m}.mine", "from caraway import Celery\nmine = Celery('{m}')\n"),
    "only instance": ("{m}", "from caraway import Celery\nqueue_app = Celery('{m}')\n"),
}


@pytest.mark.parametrize("form", sorted(PACKAGE_SOURCES))
def test_dash_a_finds_the_app_the_ways_celery_does(project: Project, form: str) -> None:
    spec, source = PACKAGE_SOURCES[form]
    name = project.add_module("form", "")
    project.write(name, source.format(m=name))
    result = invoke("-A", spec.format(m=name), "report")
    assert result.exit_code == 0, result.output
    assert f"app -> {name}\n" in result.output


def test_dash_a_with_a_package_looks_in_its_celery_submodule(project: Project) -> None:
    package = project.root / "cli_pkg_celery"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "celery.py").write_text("from caraway import Celery\nproj = Celery('pkgapp')\n")
    result = invoke("-A", "cli_pkg_celery", "report")
    assert result.exit_code == 0, result.output
    assert "app -> pkgapp\n" in result.output


def test_dash_a_naming_a_missing_module_says_which(project: Project) -> None:
    result = invoke("-A", "cli_nowhere.tasks", "report")
    assert result.exit_code == 2
    assert "cannot find module 'cli_nowhere.tasks'" in result.output
    assert str(project.root) in result.output  # where it looked


def test_dash_a_naming_a_module_without_an_app_lists_what_was_looked_for(
    project: Project,
) -> None:
    name = project.add_module("empty", "VALUE = 1\n")
    text = " ".join(invoke("-A", name, "report").output.split())
    assert f"no app found in module '{name}'" in text
    assert "an attribute 'app' or 'celery'" in text
    assert f"a submodule '{name}.celery'" in text
    assert f"-A {name}:<variable>" in text


@pytest.mark.parametrize(
    ("suffix", "message"),
    [(":missing", "has no attribute 'missing'"), (":add", "not a Caraway/Celery app")],
)
def test_dash_a_naming_the_wrong_attribute(project: Project, suffix: str, message: str) -> None:
    result = invoke("-A", project.module + suffix, "report")
    assert result.exit_code == 2
    assert message in result.output


def test_dash_a_refuses_to_guess_between_two_apps(project: Project) -> None:
    name = project.add_module(
        "two", "from caraway import Celery\nfirst = Celery('a')\nsecond = Celery('b')\n"
    )
    result = invoke("-A", name, "report")
    assert result.exit_code == 2
    assert "holds several apps (first, second)" in " ".join(result.output.split())


def test_broker_backend_and_config_options_override_the_app(project: Project) -> None:
    config = project.add_module(
        "conf", "broker_url = 'sqlite:///from-config.db'\ntask_default_queue = 'from-config'\n"
    )
    result = invoke(
        "-A", project.module, "--config", config, "-b", "sqlite:///cli.db",
        "--result-backend", "cache+memory://", "report",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "broker_url: 'sqlite:///cli.db'" in result.output  # -b wins over --config
    assert "result_backend: 'cache+memory://'" in result.output
    assert "task_default_queue: 'from-config'" in result.output
    assert f"transport: sqlite:///{project.root / 'cli.db'}" in result.output


def test_a_missing_config_module_is_named(project: Project) -> None:
    result = invoke("-A", project.module, "--config", "cli_no_such_config", "report")
    assert result.exit_code == 1
    assert "Configuration module 'cli_no_such_config' was not found" in result.output


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--args", "[1,", "not valid JSON"),
        ("--args", '{"x": 1}', "expected a JSON array"),
        ("--kwargs", "[1]", "expected a JSON object"),
        ("--eta", "tomorrow", "'tomorrow' is not an ISO-8601 time"),
    ],
)
def test_call_rejects_bad_arguments(option: str, value: str, message: str) -> None:
    result = invoke("call", "tasks.add", option, value)
    assert result.exit_code == 2
    assert message in result.output


def test_purge_asks_first_and_keeps_the_messages_on_no(project: Project) -> None:
    client = project.client()
    for n in range(3):
        client.send_task(f"{project.module}.add", (n, n))
    declined = invoke("-A", project.module, "-b", project.url, "purge", input="n\n")
    assert declined.exit_code == 1
    assert "There is no undo" in declined.output
    assert client.broker.size("celery") == 3
    accepted = invoke("-A", project.module, "-b", project.url, "purge", input="y\n")
    assert accepted.exit_code == 0
    assert accepted.output.endswith("Purged 3 messages from queue celery.\n")
    assert client.broker.size("celery") == 0


def test_worker_refuses_a_pidfile_held_by_a_live_process(project: Project) -> None:
    pidfile = project.root / "worker.pid"
    holder = os.getppid()  # alive for as long as this test runs
    pidfile.write_text(f"{holder}\n")
    result = invoke("-A", project.module, "-b", project.url, "worker", "--pidfile", str(pidfile))
    assert result.exit_code == 1
    assert f"names process {holder}, which is running" in result.output
    assert pidfile.read_text() == f"{holder}\n"


def test_worker_main_runs_the_worker_command_for_its_app(project: Project) -> None:
    client = project.client()
    with pytest.raises(SystemExit) as exit_info:
        client.worker_main(["worker", "--pool", "custom"])
    assert exit_info.value.code == 2
