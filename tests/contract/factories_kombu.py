"""The kombu bridge for the broker contract suites, on kombu's in-process ``memory``
transport, its ``filesystem`` transport, its SQLAlchemy transport (SQLite) and its SQS
transport against moto's server.

kombu keeps the bindings it has made in the process (a queue bound once is not bound again
by another connection), so every filesystem test of a process shares one set of folders, as
every worker of a deployment does; each test's queues have names of their own.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from moto_sqs import TRANSPORT_OPTIONS, session_moto

_folders: list[Path] = []


def _session_folder() -> Path:
    if not _folders:
        folder = Path(tempfile.mkdtemp(prefix="caraway-kombu-"))
        atexit.register(shutil.rmtree, folder, True)
        (folder / "messages").mkdir()
        (folder / "control").mkdir()
        _folders.append(folder)
    return _folders[0]


@contextmanager
def kombu_memory(tmp_path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    yield "kombu+memory://", {}


@contextmanager
def kombu_filesystem(tmp_path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Celery's documented form: one folder both ways, and the exchanges' control folder."""
    folder = _session_folder()
    messages, control = str(folder / "messages"), str(folder / "control")
    yield "filesystem://", {"data_folder_in": messages, "data_folder_out": messages,
                            "control_folder": control}  # fmt: skip


@contextmanager
def kombu_sqla(tmp_path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Celery's ``sqla+`` spelling: kombu's SQLAlchemy transport, on a SQLite file."""
    yield f"sqla+sqlite:///{_session_folder() / 'kombu.sqlite3'}", {}


@contextmanager
def kombu_sqs(tmp_path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Celery's ``sqs://`` form, against moto's server (``python -m moto.server``)."""
    yield session_moto().url, dict(TRANSPORT_OPTIONS)


BROKERS = {
    "kombu-memory": kombu_memory,
    "kombu-filesystem": kombu_filesystem,
    "kombu-sqla": kombu_sqla,
    "kombu-sqs": kombu_sqs,
}
