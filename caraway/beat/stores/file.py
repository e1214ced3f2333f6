"""``PersistentScheduler``'s store: run states in a JSON file (``beat_schedule_filename``),
the lease a lock on ``<file>.lock``, so several beats on one machine still send once.

The file is replaced atomically (write, fsync, rename): a crash leaves the old or the new
state, never half of one.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from caraway.engines.base.beat_store import BeatStore, EntryState
from caraway.exceptions import OperationalError
from caraway.utils.filelock import FileLease

logger = logging.getLogger("caraway.beat")
FORMAT = "caraway-beat-state/1"


class FileStore(BeatStore):
    holds_while_alive = True
    stores_definitions = False

    def __init__(self, path: str | os.PathLike[str], sync_every: int = 0) -> None:
        self.path = Path(path)
        self.lease = FileLease(self.path.with_name(self.path.name + ".lock"))
        #: ``beat_sync_every``: write after this many runs (0: after every run). Runs not
        #: yet written are sent again by the next beat if this one is killed.
        self.sync_every = max(0, sync_every)
        self._unsynced = 0
        self._states: dict[str, EntryState] | None = None

    def describe(self) -> str:
        return str(self.path)

    def acquire(self, owner: str, ttl: float) -> bool:
        if not self.lease.held and self.lease.acquire():
            self._states = None  # another beat may have written since we last read
        return self.lease.held

    def release(self, owner: str) -> None:
        if self.lease.held:
            self._flush()  # runs not yet written, before the next beat reads the file
        self.lease.release()

    def still_held(self, owner: str) -> bool:
        return self.lease.held

    def states(self) -> dict[str, EntryState]:
        if self._states is None:
            self._states = self._read()
        return dict(self._states)

    def _read(self) -> dict[str, EntryState]:
        try:
            document = json.loads(self.path.read_text())
            if document.get("format") != FORMAT:
                raise ValueError("not a caraway beat state file")
            return {name: EntryState.from_json(s) for name, s in document["entries"].items()}
        except FileNotFoundError:
            return {}
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
            logger.warning(
                "Beat state file %s is unreadable (%s): starting from a fresh schedule; "
                "it will be overwritten.", self.path, exc,
            )  # fmt: skip
            return {}

    def save_states(self, owner: str, states: Mapping[str, EntryState]) -> bool:
        if not self.lease.held:
            return False
        current = self.states()
        current.update(states)
        self._states = current
        self._unsynced += 1
        if self._unsynced >= self.sync_every:
            self._flush()
        return True

    def _flush(self) -> None:
        if self._states is not None and self._unsynced:
            self._write(self._states)
        self._unsynced = 0

    def forget_state(self, name: str) -> None:
        if self.lease.held and name in self.states():
            current = self.states()
            del current[name]
            self._states = current
            self._unsynced += 1
            self._flush()

    def _write(self, states: Mapping[str, EntryState]) -> None:
        document = {"format": FORMAT, "entries": {n: s.to_json() for n, s in states.items()}}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name + ".")
            with os.fdopen(fd, "w") as handle:
                json.dump(document, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
        except OSError as exc:
            raise OperationalError(f"cannot write the beat state file {self.path}: {exc}") from exc

    def close(self) -> None:
        self.release("")
