"""How ``caraway worker -P gevent`` decides to patch the process first (caraway.utils.green),
and what a gevent or eventlet pool says where it cannot run."""

from __future__ import annotations

import subprocess
import sys

import pytest

from caraway.exceptions import ImproperlyConfigured
from caraway.utils.green import pool_in_argv, pool_to_patch_for, running_the_command
from caraway.worker.pools import create_pool

COMMAND = "/venv/bin/caraway"


def test_eventlet_is_read_the_same_way() -> None:
    argv = ["-A", "proj", "worker", "--pool=eventlet", "-c", "100"]
    assert pool_to_patch_for([COMMAND, *argv], ["python", COMMAND, *argv]) == "eventlet"


@pytest.mark.parametrize(
    "argv",
    [
        ["-A", "proj", "worker", "-P", "gevent"],
        ["-A", "proj", "worker", "-Pgevent", "-c", "500"],
        ["worker", "--pool", "gevent"],
        ["worker", "--pool=gevent"],
        ["worker", "-P", "threads", "-P", "gevent"],  # the last one wins, as click's
    ],
)
def test_the_pool_is_read_from_every_spelling_celery_accepts(argv: list[str]) -> None:
    assert pool_in_argv(argv) == "gevent"
    assert pool_to_patch_for([COMMAND, *argv], ["python", COMMAND, *argv]) == "gevent"


@pytest.mark.parametrize(
    "argv",
    [
        ["worker", "-P", "threads"],
        ["worker"],  # worker_pool in the configuration: read too late, the pool refuses
        ["call", "tasks.add", "-P", "gevent"],  # not a worker
        ["worker", "--", "-P", "gevent"],
    ],
)
def test_no_patch_unless_a_worker_asks_for_gevent(argv: list[str]) -> None:
    assert pool_to_patch_for([COMMAND, *argv], ["python", COMMAND, *argv]) is None


def test_only_the_caraway_command_patches() -> None:
    assert running_the_command("/usr/local/bin/caraway", [])
    assert running_the_command("-m", ["python", "-X", "dev", "-m", "caraway", "worker"])
    assert running_the_command("-m", ["python3", "-mcaraway", "worker"])
    assert not running_the_command("-m", ["python", "-m", "pytest", "-P", "gevent"])
    assert not running_the_command("app.py", ["python", "app.py", "worker", "-P", "gevent"])
    assert not running_the_command("-c", ["python", "-c", "...", "-m", "caraway"])


def test_importing_caraway_with_gevent_in_argv_patches_nothing() -> None:
    """A program of the user's that imports caraway is never patched behind its back."""
    script = (
        "import caraway, socket, gevent.monkey; print(gevent.monkey.is_module_patched('socket'))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script, "worker", "-P", "gevent"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("pool", "patch_call"),
    [("gevent", "gevent.monkey.patch_all()"), ("eventlet", "eventlet.monkey_patch()")],
)
def test_a_green_pool_in_an_unpatched_process_says_how_to_start_it(
    pool: str, patch_call: str
) -> None:
    with pytest.raises(ImproperlyConfigured) as caught:
        create_pool(pool, 10)

    text = str(caught.value)
    assert f"the {pool} pool needs the process monkey-patched before anything else" in text
    assert f"`caraway -A proj worker -P {pool}`" in text
    assert patch_call in text
    assert pool not in sys.modules  # not imported here: eventlet's would hook every fork
