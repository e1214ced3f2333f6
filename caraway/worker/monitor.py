"""What a worker tells the outside about its tasks: the bookkeeping that ``inspect active``
and ``revoke(terminate=True)`` need, task events, and the worker's heartbeat.

It listens to the worker's own signals (filtered to this worker), so the consumer and the
execution code stay unaware of it.
"""

from __future__ import annotations

import logging
import os
import platform
import signal
import threading
import time
from typing import TYPE_CHECKING, Any

from caraway import signals, states
from caraway.exceptions import Ignore
from caraway.protocol import _safe_repr
from caraway.version import __version__

if TYPE_CHECKING:
    from caraway.events.dispatcher import EventDispatcher
    from caraway.execution import Outcome
    from caraway.worker.job import Job
    from caraway.worker.worker import Worker

logger = logging.getLogger("caraway.worker")

#: Seconds between heartbeats by default (Celery's worker heartbeat, sent as ``freq``).
HEARTBEAT_FREQ = 2.0


def _chord_body(chord: Any) -> str | None:
    """The id of the task a chord header member's result goes to: the body's, or its first
    step's when the body is a chain (None for a body whose id is not known yet)."""
    while isinstance(chord, dict):
        if chord.get("task") == "celery.chain":
            steps = (chord.get("kwargs") or {}).get("tasks") or [None]
            chord = steps[0]
            continue
        task_id = (chord.get("options") or {}).get("task_id")
        return str(task_id) if task_id else None
    return None


class Terminated(Ignore):
    """Raised inside a task's thread by ``revoke(terminate=True)``.

    An ``Ignore``: the task stores nothing more (its REVOKED result is already stored), and
    its message is settled like that of a finished task.
    """


class TaskMonitor:
    def __init__(
        self, worker: Worker, dispatcher: EventDispatcher, freq: float = HEARTBEAT_FREQ
    ) -> None:
        self.worker = worker
        self.dispatcher = dispatcher
        self.freq = freq  # what heartbeats announce: monitors expire the worker by it
        #: task id -> (start time, its pool's owner: thread ident or greenlet) of the tasks
        #: running now.
        self.running: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()
        self._uid = f"caraway-monitor-{id(self)}"

    # --- wiring ----------------------------------------------------------------------------

    # Start and end of a run come from the consumer (``started``/``finished``), not from
    # task_prerun/postrun: on prefork those signals fire in the child, not here.
    _HOOKS = (
        ("task_received", "on_received"), ("task_revoked", "on_revoked"),
        ("task_rejected", "on_rejected"),
    )  # fmt: skip

    def install(self) -> None:
        for signal_name, method in self._HOOKS:
            getattr(signals, signal_name).connect(getattr(self, method), dispatch_uid=self._uid)

    def uninstall(self) -> None:
        for signal_name, _ in self._HOOKS:
            getattr(signals, signal_name).disconnect(dispatch_uid=self._uid)

    def _send(self, event_type: str, **fields: Any) -> None:
        self.dispatcher.send(event_type, **fields)

    # --- worker events -------------------------------------------------------------------

    def worker_fields(self) -> dict[str, Any]:
        state = self.worker.state
        try:
            loadavg = [round(value, 2) for value in os.getloadavg()]
        except OSError:
            loadavg = [0.0, 0.0, 0.0]
        return {
            "freq": self.freq, "active": len(state.active),
            "processed": state.total_processed, "loadavg": loadavg, "sw_ident": "py-caraway",
            "sw_ver": __version__, "sw_sys": platform.system(),
        }  # fmt: skip

    def heartbeat(self, event_type: str = "worker-heartbeat") -> None:
        self._send(event_type, **self.worker_fields())
        if event_type == "worker-heartbeat":
            signals.heartbeat_sent.send(sender=self.worker)

    # --- task events and bookkeeping ---------------------------------------------------------

    def _ours(self, request: Any) -> bool:
        return getattr(request, "hostname", None) == self.worker.hostname

    def on_received(self, sender: Any = None, request: Any = None, **kwargs: Any) -> None:
        if sender is not self.worker.consumer or request is None:
            return
        if not self.dispatcher.allows("task-received"):
            return  # the reprs of the arguments cost more than a small task
        self._send(
            "task-received", uuid=request.id, name=request.task,
            args=_safe_repr(tuple(request.args or ())), kwargs=_safe_repr(request.kwargs or {}),
            root_id=request.root_id, parent_id=request.parent_id, retries=request.retries,
            eta=request.eta, expires=request.expires,
            # Not in Celery's event (its consumers ignore unknown fields): the dashboard draws
            # groups and chords with them.
            group_id=request.group, chord_body=_chord_body(request.chord),
        )  # fmt: skip

    def started(self, job: Job) -> None:
        """A task is about to run, in this thread (the consumer calls this)."""
        pool = self.worker.reserving
        owner = pool.owner() if pool is not None else threading.get_ident()
        with self._lock:
            self.running[job.id] = (time.time(), owner)
        if self.dispatcher.allows("task-started"):
            self._send("task-started", uuid=job.id)

    def finished(self, job: Job, outcome: Outcome) -> None:
        """A run ended with ``outcome``: its event (succeeded, failed or retried)."""
        with self._lock:
            started = self.running.pop(job.id, None)
        if started is None:
            return
        state, retval = outcome.state, outcome.retval
        traceback = outcome.einfo.traceback if outcome.einfo is not None else None
        if state == states.SUCCESS and self.dispatcher.allows("task-succeeded"):
            self._send(
                "task-succeeded", uuid=job.id, result=_safe_repr(retval),
                runtime=time.time() - started[0],
            )  # fmt: skip
        elif state == states.FAILURE and self.dispatcher.allows("task-failed"):
            self._send(
                "task-failed", uuid=job.id, exception=repr(retval), traceback=traceback
            )  # fmt: skip
        elif state == states.RETRY and self.dispatcher.allows("task-retried"):
            reason = (
                retval.exc if isinstance(getattr(retval, "exc", None), BaseException) else retval
            )
            self._send("task-retried", uuid=job.id, exception=repr(reason), traceback=traceback)

    def on_revoked(
        self, sender: Any = None, request: Any = None, terminated: bool = False,
        signum: Any = None, expired: bool = False, **kwargs: Any,
    ) -> None:  # fmt: skip
        if request is not None and self._ours(request):
            self._send(
                "task-revoked", uuid=request.id, terminated=terminated, signum=signum,
                expired=expired,
            )  # fmt: skip

    def on_rejected(self, sender: Any = None, message: Any = None, **kwargs: Any) -> None:
        if sender is self.worker.consumer and message is not None:
            self._send("task-rejected", uuid=message.task_id, requeue=False)

    # --- inspection and termination ---------------------------------------------------------

    def time_start(self, task_id: str) -> float | None:
        started = self.running.get(task_id)
        return started[0] if started else None

    def terminate(self, task_id: str, signum: int | None) -> bool:
        """Stop a running task by raising ``Terminated`` in it, through its pool.

        Threads cannot be killed: the exception arrives at the task's next Python
        instruction, so code blocked in C (a long ``time.sleep``, a socket read) stops only
        once that call returns. A greenlet (gevent) gets it at its next switch, so a task
        waiting on the network stops at once. A task that catches every exception can
        swallow it.
        """
        pool = self.worker.reserving
        if pool is not None and pool.terminate(task_id, signum or signal.SIGTERM):
            return True  # a pool with processes signals the child; it records the revoke
        job = self.worker.state.active.get(task_id)
        with self._lock:
            started = self.running.get(task_id)
            if job is None or started is None:
                return False
            request = job.request
            if not job.call.ignore_result:
                self.worker.app.backend.mark_as_revoked(task_id, "terminated", request)
            signals.task_revoked.send(
                sender=job.task, request=request, terminated=True, signum=signum, expired=False
            )
            return pool is not None and pool.interrupt(started[1], Terminated)
