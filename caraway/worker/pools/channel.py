"""Pickled messages over one end of a prefork child's pipe: one write, usually one read.

``multiprocessing.Connection`` pickles through ``ForkingPickler`` (a Python-level pickler
built per message), reads each message with two system calls (length, then body) and polls
through a fresh selector each time. Every task crosses this pipe twice, and the supervisor's
share of it is paid once per task for all children, so the framing here is the plainest
that works: a 4-byte length, the C pickler, and reads into a buffer that keeps what the
next message already delivered.
"""

from __future__ import annotations

import os
import pickle
import select
import struct
from multiprocessing.connection import Connection
from typing import Any

_LENGTH = struct.Struct("!I")
#: Bytes asked of one read: a task message or reply of this size arrives in a single read.
READ_SIZE = 65536


class Channel:
    """One end of a child's pipe. Not thread-safe: one thread talks on each end."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._fd = conn.fileno()
        self._buffer = bytearray()

    def fileno(self) -> int:
        return self._fd

    def send(self, message: Any) -> None:
        """Write ``message`` whole (blocking while the pipe is full). OSError: the peer is gone."""
        body = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
        data = memoryview(_LENGTH.pack(len(body)) + body)
        while data:
            data = data[os.write(self._fd, data) :]

    def poll(self, timeout: float | None) -> bool:
        """Whether a message (or the end of the pipe) can be read within ``timeout`` s."""
        if self._complete():
            return True
        ready, _, _ = select.select([self._fd], [], [], timeout)
        return bool(ready)

    def recv(self) -> Any:
        """The next message, waiting for it. EOFError: the peer closed its end (or died)."""
        while not self._complete():
            chunk = os.read(self._fd, READ_SIZE)
            if not chunk:
                raise EOFError("the other end of the pipe is closed")
            self._buffer += chunk
        size = _LENGTH.unpack_from(self._buffer)[0]
        end = _LENGTH.size + size
        body = bytes(self._buffer[_LENGTH.size : end])
        del self._buffer[:end]
        return pickle.loads(body)

    def close(self) -> None:
        self.conn.close()

    def _complete(self) -> bool:
        """Whether the buffer holds a whole message."""
        if len(self._buffer) < _LENGTH.size:
            return False
        size: int = _LENGTH.unpack_from(self._buffer)[0]
        return len(self._buffer) >= _LENGTH.size + size
