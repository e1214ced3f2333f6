"""The result backend contract, and the logic every backend shares.

An engine stores opaque encoded payloads under Celery's key names
(``celery-task-meta-<id>``, ``celery-taskset-meta-<gid>``); building the meta, encoding,
exceptions, expiry and waiting are written once here.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Literal

from caraway import serialization, states
from caraway.engines.base.compressed import compress_payload, decompress_payload
from caraway.engines.base.exception_meta import exception_to_meta, meta_to_exception
from caraway.exceptions import (
    ConfigurationWarning,
    ImproperlyConfigured,
    TaskRevokedError,
    TimeoutError,
    Unreachable,
)
from caraway.utils.text import mask_url

if TYPE_CHECKING:
    from caraway.engines.base.app import EngineApp
    from caraway.engines.base.beat_store import BeatStore
    from caraway.engines.base.chord_join import Joiner

logger = logging.getLogger("caraway.backend")
#: Set in a block whose stores must not wait for the backend (``Backend.without_retries``).
_NO_RETRY: ContextVar[bool] = ContextVar("caraway_backend_no_retry", default=False)

TASK_KEY_PREFIX = "celery-task-meta-"
GROUP_KEY_PREFIX = "celery-taskset-meta-"


@dataclass(slots=True)
class Stored:
    """An encoded payload as an engine keeps it."""

    payload: bytes
    content_type: str
    content_encoding: str


#: How a backend joins a chord's header results in the worker: ``counting`` with the
#: ``chord_*`` primitives, ``native`` with a join of its own (Celery's Redis keys), ``none``
#: (Celery's ``chord_unlock`` task polls the results, when workers can read them).
ChordJoinKind = Literal["counting", "native", "none"]


@dataclass(frozen=True, slots=True)
class BackendCapabilities:
    """What a result backend engine can do; an engine declares it as ``capabilities``."""

    #: How chords are joined (``chord_joiner`` makes the join when this is not ``none``).
    chord_join: ChordJoinKind = "none"
    #: A worker can read results other processes stored (not so for ``rpc://``).
    readable_by_workers: bool = True
    #: Results travel to the sender's own reply queue, which must exist before the first
    #: task is sent: the backend is made before sending, not on first read.
    needs_reply_queue: bool = False
    #: ``beat_store`` keeps the database scheduler's schedules beside the results.
    beat_schedules: bool = False
    #: Results are kept at all (False for the backend used when none is configured).
    stores_results: bool = True
    #: Payloads are kept as opaque bytes, so ``result_compression`` can apply (not so where
    #: Celery reads the stored fields, as in the SQL tables).
    compressed_results: bool = False


def expires_seconds(value: Any) -> float | None:
    """``result_expires`` (a timedelta, seconds, or None/0 for never) in seconds."""
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    return seconds or None


class Backend(ABC):
    """What a result backend engine must provide, and the shared behaviour above it."""

    #: Smallest pause between two reads while polling; grows up to the caller's interval.
    first_poll = 0.001
    capabilities: BackendCapabilities = BackendCapabilities()

    def __init__(self, app: EngineApp, url: str, options: Mapping[str, Any] | None = None) -> None:
        self.app = app
        self.url = url
        self.options = dict(options or {})
        conf = app.conf
        self.serializer: str = conf.result_serializer
        self.accept = serialization.normalize_accept(
            conf.result_accept_content or conf.accept_content
        )
        self.expires = expires_seconds(conf.result_expires)
        self.extended = bool(conf.result_extended)
        self.always_retry = bool(conf.result_backend_always_retry)
        self.max_retries = float(conf.result_backend_max_retries)
        self.base_sleep = conf.result_backend_base_sleep_between_retries_ms / 1000
        self.max_sleep = conf.result_backend_max_sleep_between_retries_ms / 1000
        self.compression = self._compression(conf.result_compression)

    def _compression(self, method: str | None) -> str | None:
        """``result_compression`` checked now: an unknown method fails at setup."""
        if not method:
            return None
        if not self.capabilities.compressed_results:
            warnings.warn(
                f"result_compression={method!r} is ignored: {self.describe()} stores results "
                "in fields Celery reads, so they are stored uncompressed",
                ConfigurationWarning,
                stacklevel=2,
            )
            return None
        serialization.compress(b"", method)  # raises naming the known methods
        return method

    # --- engine primitives -------------------------------------------------------------

    @abstractmethod
    def get_raw(self, key: str) -> Stored | None:
        """The payload stored under ``key``, or None."""

    @abstractmethod
    def set_raw(self, key: str, value: Stored, state: str | None, ttl: float | None) -> None:
        """Store ``value``; a key already holding SUCCESS is never overwritten by a task."""

    @abstractmethod
    def delete_raw(self, key: str) -> None:
        """Forget ``key``."""

    @abstractmethod
    def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """Atomically add ``amount`` to the counter ``key``; returns the new value.

        Chords count finished header tasks with it, so no worker has to poll.
        """

    def wait_changed(self, key: str, timeout: float) -> None:
        """Block until ``key`` may have changed or ``timeout`` passes (default: just sleep)."""
        time.sleep(timeout)

    def on_task_call(self, task_id: str) -> None:  # noqa: B027 - a hook, most need nothing
        """A task whose result may be waited for is about to be sent (Celery's hook)."""

    def cleanup(self) -> int:
        """Delete expired entries where the engine does not expire them itself."""
        return 0

    def close(self) -> None:  # noqa: B027 - most engines hold nothing to close
        """Release connections."""

    def read_counter(self, key: str) -> int | None:
        """The counter ``key``, or None when it was never set (or cannot be read)."""
        return None

    def beat_store(self) -> BeatStore:
        """The database scheduler's store, beside the results (backends with
        ``beat_schedules``)."""
        raise ImproperlyConfigured(
            f"the database scheduler keeps schedules in the result backend, and "
            f"{self.describe()} cannot hold them. Set result_backend to sqlite:///..., "
            "redis://... or db+postgresql://... (or use the default PersistentScheduler)."
        )

    def chord_joiner(self, size: int | None = None) -> Joiner:
        """The join of a chord's header results (``size`` of them, when the body carries
        it), for backends whose ``chord_join`` is not ``none``."""
        if self.capabilities.chord_join != "counting":
            raise ImproperlyConfigured(f"{self.describe()} cannot join chords in the worker")
        # Lazy, breaks the cycle engines.base.backend -> engines.base.chord_join -> backend.
        from caraway.engines.base.chord_join import CountingJoiner

        return CountingJoiner(self, size)

    def ensure_chords_allowed(self) -> None:
        """Celery's check before a chord is sent: :class:`NotImplementedError` when this
        backend can neither join a chord nor let the workers read its header results."""
        capabilities = self.capabilities
        if capabilities.chord_join != "none":
            return
        if not capabilities.stores_results or not capabilities.readable_by_workers:
            raise NotImplementedError(
                f"the result backend {self.describe()} does not support chords: use redis://,"
                " a SQL database (db+postgresql://...) or sqlite:// as result_backend"
            )

    # --- chord join primitives (engines whose ``chord_join`` is ``counting``) -------------

    def chord_join(self, group_id: str, member: str, payload: bytes, ttl: float | None) -> int:
        """Add ``member`` (``<task_id>:<index>``) with ``payload`` unless already there, and
        return how many members the chord has, in one atomic step; -1 once it is finished."""
        raise NotImplementedError(f"{self.describe()} cannot join chords by counting")

    def chord_members(self, group_id: str) -> list[tuple[str, bytes]]:
        """Every ``(member, payload)`` added to the chord."""
        raise NotImplementedError(f"{self.describe()} cannot join chords by counting")

    def chord_claim(self, group_id: str, ttl: float) -> bool:
        """Take the right to finish the chord, unless someone holds it (for ``ttl``) or it
        is finished; an expired claim (its holder crashed) can be taken over."""
        raise NotImplementedError(f"{self.describe()} cannot join chords by counting")

    def chord_finish(self, group_id: str, ttl: float) -> None:
        """Drop the chord's members and mark it finished for ``ttl`` seconds."""
        raise NotImplementedError(f"{self.describe()} cannot join chords by counting")

    # --- shared logic ------------------------------------------------------------------

    def stored(self, payload: bytes) -> Stored:
        """``payload`` as encoded by this backend's serializer."""
        content_type, encoding, _ = serialization.dumps(None, self.serializer)
        return Stored(payload, content_type, encoding)

    def encode(self, data: Any) -> Stored:
        content_type, encoding, payload = serialization.dumps(data, self.serializer)
        if self.compression:
            payload = compress_payload(payload, self.compression)
        return Stored(payload, content_type, encoding)

    def decode(self, stored: Stored | bytes | str) -> Any:
        """A stored value; raw bytes as read from the store are in this backend's serializer
        (Celery's ``backend.decode(payload)``)."""
        if not isinstance(stored, Stored):
            stored = self.stored(stored.encode() if isinstance(stored, str) else stored)
        return serialization.loads(
            decompress_payload(stored.payload), stored.content_type, stored.content_encoding,
            self.accept,
        )  # fmt: skip

    def build_meta(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: str | None = None,
        request: Any = None,
    ) -> dict[str, Any]:
        """The meta dict in Celery 5.7's key order (docs/celery-wire.md §5.3)."""
        if isinstance(result, BaseException):
            result = exception_to_meta(result)
        ready = state in states.READY_STATES
        meta: dict[str, Any] = {
            "status": state,
            "result": result,
            "traceback": traceback,
            "children": list(getattr(request, "children", None) or []),
            "date_done": datetime.now(timezone.utc).isoformat() if ready else None,
        }
        if request is not None:
            if getattr(request, "group", None):
                meta["group_id"] = request.group
            if getattr(request, "parent_id", None):
                meta["parent_id"] = request.parent_id
            if self.extended:
                meta.update(
                    name=getattr(request, "task", None),
                    args=list(getattr(request, "args", None) or []),
                    kwargs=dict(getattr(request, "kwargs", None) or {}),
                    worker=getattr(request, "hostname", None),
                    retries=getattr(request, "retries", 0),
                    queue=(getattr(request, "delivery_info", None) or {}).get("routing_key"),
                )
        meta["task_id"] = task_id
        return meta

    def store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: str | None = None,
        request: Any = None,
    ) -> dict[str, Any]:
        """Store the outcome; with ``result_backend_always_retry``, a store that finds the
        backend unreachable is tried again with exponential backoff (Celery's settings),
        so a short outage delays the result instead of losing it or rerunning the task."""
        retries = 0
        while True:
            try:
                return self._store_result(task_id, result, state, traceback, request)
            except Unreachable as exc:
                if not self.always_retry or _NO_RETRY.get() or retries >= self.max_retries:
                    raise
                growth = 2 ** min(retries, 30)  # the cap is reached long before
                pause = random.uniform(0, min(self.max_sleep, self.base_sleep * growth))
                retries += 1
                logger.warning(
                    "Could not store the result of %s (%s); try %d in %.2f s",
                    task_id, exc, retries, pause,
                )  # fmt: skip
                time.sleep(pause)

    @staticmethod
    @contextmanager
    def without_retries() -> Iterator[None]:
        """Stores in the block fail at once: for threads that must not wait out an outage
        (the worker's consumer loop)."""
        token = _NO_RETRY.set(True)
        try:
            yield
        finally:
            _NO_RETRY.reset(token)

    def _store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: str | None,
        request: Any,
    ) -> dict[str, Any]:
        """The engine's write of one outcome: encoded meta under the task's key."""
        meta = self.build_meta(task_id, result, state, traceback, request)
        self.set_raw(TASK_KEY_PREFIX + task_id, self.encode(meta), state, self.expires)
        return meta

    def mark_as_started(self, task_id: str, request: Any = None, **meta: Any) -> None:
        self.store_result(task_id, meta, states.STARTED, request=request)

    def mark_as_done(self, task_id: str, result: Any, request: Any = None) -> None:
        self.store_result(task_id, result, states.SUCCESS, request=request)

    def mark_as_failure(
        self, task_id: str, exc: BaseException, traceback: str | None = None, request: Any = None
    ) -> None:
        self.store_result(task_id, exc, states.FAILURE, traceback, request)

    def mark_as_revoked(self, task_id: str, reason: str = "", request: Any = None) -> None:
        self.store_result(task_id, TaskRevokedError(reason), states.REVOKED, None, request)

    def mark_as_retry(
        self, task_id: str, exc: BaseException, traceback: str | None = None, request: Any = None
    ) -> None:
        self.store_result(task_id, exc, states.RETRY, traceback, request)

    def get_task_meta(self, task_id: str) -> dict[str, Any]:
        return self.meta_of(task_id, self.get_raw(TASK_KEY_PREFIX + task_id))

    def get_many_task_meta(self, task_ids: Sequence[str]) -> list[dict[str, Any]]:
        """``get_task_meta`` of each task, in order; engines that read many keys in one
        request override it (a 10,000-member group is then ten requests, not 10,000)."""
        return [self.get_task_meta(task_id) for task_id in task_ids]

    def meta_of(self, task_id: str, stored: Stored | None) -> dict[str, Any]:
        """The meta a stored result holds; a PENDING meta where nothing is stored."""
        if stored is None:
            return {
                "status": states.PENDING,
                "result": None,
                "traceback": None,
                "children": [],
                "date_done": None,
                "task_id": task_id,
            }
        meta: dict[str, Any] = self.decode(stored)
        return meta

    def get_state(self, task_id: str) -> str:
        return str(self.get_task_meta(task_id)["status"])

    def forget(self, task_id: str) -> None:
        self.delete_raw(TASK_KEY_PREFIX + task_id)

    def exception_from_meta(self, meta: dict[str, Any]) -> BaseException:
        return meta_to_exception(meta.get("result"))

    def wait_for(
        self,
        task_id: str,
        timeout: float | None = None,
        interval: float = 0.5,
        on_interval: Callable[[], Any] | None = None,
    ) -> dict[str, Any]:
        """Block until the task is ready; polls from 1 ms up to ``interval`` (≤ 0.1 s)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = self.first_poll
        cap = max(min(interval, 0.1), self.first_poll)
        key = TASK_KEY_PREFIX + task_id
        while True:
            meta = self.get_task_meta(task_id)
            if meta["status"] in states.READY_STATES:
                return meta
            if on_interval is not None:
                on_interval()
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"the operation timed out waiting for task {task_id}")
                pause = min(pause, remaining)
            self.wait_changed(key, pause)
            pause = min(pause * 2, cap)

    async def wait_for_async(
        self, task_id: str, timeout: float | None = None, interval: float = 0.5
    ) -> dict[str, Any]:
        """``wait_for`` for a running event loop: each read runs in a worker thread and the
        pauses (1 ms doubling up to ``interval``, at most 0.1 s) are ``asyncio.sleep``s.
        Engines with an asyncio client (Redis) wait for the result's notification instead."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = self.first_poll
        cap = max(min(interval, 0.1), self.first_poll)
        while True:
            meta = await asyncio.to_thread(self.get_task_meta, task_id)
            if meta["status"] in states.READY_STATES:
                return meta
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"the operation timed out waiting for task {task_id}")
                pause = min(pause, remaining)
            await asyncio.sleep(pause)
            pause = min(pause * 2, cap)

    def save_group(self, group_id: str, result: Any) -> Any:
        self.set_raw(
            GROUP_KEY_PREFIX + group_id, self.encode({"result": result}), None, self.expires
        )
        return result

    def restore_group(self, group_id: str) -> Any:
        stored = self.get_raw(GROUP_KEY_PREFIX + group_id)
        return None if stored is None else self.decode(stored).get("result")

    def delete_group(self, group_id: str) -> None:
        self.delete_raw(GROUP_KEY_PREFIX + group_id)

    def describe(self) -> str:
        return mask_url(self.url)
