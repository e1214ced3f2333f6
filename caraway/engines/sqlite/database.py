"""The SQLite file behind the embedded default: one file holds the broker and the results.

Each thread gets its own connection (SQLite connections are not shared across threads), in
WAL mode so readers never block the writer and several worker processes on one machine can
share the file. ``synchronous=NORMAL`` keeps every commit across a process crash; only a
power loss may lose the last transactions, the usual WAL trade-off.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

from caraway.exceptions import ImproperlyConfigured, OperationalError
from caraway.utils.home import home_folder
from caraway.utils.pid import after_fork_in_child

DEFAULT_FILENAME = "caraway.sqlite3"
#: How long a writer waits for another process's transaction before giving up.
BUSY_TIMEOUT_MS = 30_000


def default_path() -> Path:
    """``$CARAWAY_HOME/caraway.sqlite3``, else under ``$XDG_DATA_HOME`` (``~/.local/share``).

    A per-user location (not the current directory) so a client and a worker started from
    different folders still meet on the same file.
    """
    home = home_folder()
    if home is not None:
        return home / DEFAULT_FILENAME
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "caraway" / DEFAULT_FILENAME


def path_from_url(url: str | None) -> Path:
    """``sqlite:///relative.db``, ``sqlite:////abs/path.db`` (SQLAlchemy's form) or None."""
    if not url:
        return default_path()
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in {"sqlite", "db+sqlite"}:
        raise ImproperlyConfigured(f"not a SQLite URL: {url!r} (expected sqlite:///path)")
    path = rest[1:] if rest.startswith("/") else rest
    path = path.split("?", 1)[0]
    if not path:
        return default_path()
    return Path(path).expanduser()


#: The file holds every task's arguments and results: its owner alone reads it (SQLite gives
#: the -wal and -shm files the database file's mode), in folders only caraway created.
FILE_MODE = 0o600
FOLDER_MODE = 0o700


def _create_private(path: Path) -> None:
    """Create ``path`` (and its missing folders) private, whatever the umask; an existing
    file or folder keeps the mode its owner gave it."""
    missing = [folder for folder in (path.parent, *path.parent.parents) if not folder.exists()]
    for folder in reversed(missing):
        folder.mkdir(mode=FOLDER_MODE, exist_ok=True)  # the umask can only take bits away
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, FILE_MODE))


class Database:
    """One SQLite file, a connection per thread, and the schema of everything stored in it."""

    _instances: ClassVar[dict[Path, Database]] = {}
    _instances_lock = threading.Lock()

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conns: weakref.WeakKeyDictionary[threading.Thread, sqlite3.Connection] = (
            weakref.WeakKeyDictionary()
        )
        self._schemas: set[str] = set()
        self._lock = threading.Lock()
        self._closers: list[weakref.finalize[[], threading.Thread]] = []
        after_fork_in_child(self._forget_parent)

    @classmethod
    def open(cls, path: Path) -> Database:
        """The shared ``Database`` for ``path`` in this process."""
        key = path.resolve() if path.exists() else path.absolute()
        with cls._instances_lock:
            db = cls._instances.get(key)
            if db is None:
                db = cls._instances[key] = cls(key)
            return db

    def connection(self) -> sqlite3.Connection:
        """This thread's connection; it is closed when the thread object goes away."""
        thread = threading.current_thread()
        conn = self._conns.get(thread)
        if conn is None:
            conn = self._conns[thread] = self._connect()
            self._closers.append(weakref.finalize(thread, conn.close))
        return conn

    def _connect(self) -> sqlite3.Connection:
        try:
            _create_private(self.path)
            # check_same_thread off: the finalizer that closes it may run on another thread.
            conn = sqlite3.connect(
                self.path,
                isolation_level=None,
                timeout=BUSY_TIMEOUT_MS / 1000,
                check_same_thread=False,
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        except (OSError, sqlite3.Error) as exc:
            raise OperationalError(f"cannot open the SQLite file {self.path}: {exc}") from exc
        return conn

    def ensure_schema(self, name: str, statements: str) -> None:
        """Run ``statements`` (idempotent DDL) once per process for this file."""
        if name in self._schemas:
            return
        with self._lock:
            if name not in self._schemas:
                with self.write() as conn:
                    for statement in filter(None, (s.strip() for s in statements.split(";"))):
                        conn.execute(statement)
                self._schemas.add(name)

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction taken at once (``BEGIN IMMEDIATE``), so it never deadlocks.

        Inside another ``write()`` of this thread it joins that transaction: beat publishes a
        message and records the run in one commit.
        """
        conn = self.connection()
        if conn.in_transaction:
            yield conn
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise OperationalError(f"SQLite file {self.path} is not writable: {exc}") from exc
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")

    def close_thread(self) -> None:
        conn = self._conns.pop(threading.current_thread(), None)
        if conn is not None:
            conn.close()

    def _forget_parent(self) -> None:
        """In a forked child: new connections and locks. The parent's connections are kept
        open and never used: SQLite must not close, in a child, a handle opened before fork."""
        _INHERITED.extend(self._conns.values())
        for closer in self._closers:
            closer.detach()
        self._closers = []
        self._conns = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()


#: In a forked child: the parent's SQLite connections, kept so nothing closes them here.
_INHERITED: list[sqlite3.Connection] = []


def _new_instances_lock() -> None:
    Database._instances_lock = threading.Lock()


after_fork_in_child(_new_instances_lock)
