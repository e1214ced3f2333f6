"""The worker's link to monitors: remote control, task events and heartbeats.

Boot (``start``, before the worker reports ready): a broadcast engine of its own, the
event dispatcher (worker events always, unless ``without_heartbeat``; task events with
``-E`` / ``worker_send_task_events`` or after ``enable_events``), the task monitor, the
control consumer (unless ``worker_enable_remote_control`` is off: then the worker binds no
pidbox queue, so it neither answers nor obeys commands), then ``worker-online`` and a
heartbeat every ``heartbeat_interval`` s (``HEARTBEAT_FREQ`` by default).
Shutdown (``stop``) sends ``worker-offline`` and closes them in reverse order.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from caraway.control import Control
from caraway.events.dispatcher import EventDispatcher
from caraway.exceptions import ImproperlyConfigured
from caraway.worker.monitor import HEARTBEAT_FREQ, TaskMonitor
from caraway.worker.pidbox import Pidbox

if TYPE_CHECKING:
    from caraway.engines.base.fanout import Fanout
    from caraway.worker.worker import Worker

logger = logging.getLogger("caraway.worker")

#: Seconds a worker on a broker that keeps no revocations waits for its peers' revoked ids.
MINGLE_TIMEOUT = 1.0


class RemoteControl:
    def __init__(
        self, worker: Worker, task_events: bool, without_heartbeat: bool,
        without_mingle: bool = False, heartbeat_interval: float | None = None,
    ) -> None:  # fmt: skip
        self.worker = worker
        self.heartbeat_interval = heartbeat_interval or HEARTBEAT_FREQ
        self.task_events = task_events
        self.without_heartbeat = without_heartbeat
        self.without_mingle = without_mingle
        self.fanout: Fanout | None = None
        self.pidbox: Pidbox | None = None
        self._stopped = threading.Event()
        self._heart: threading.Thread | None = None

    def start(self) -> None:
        worker = self.worker
        try:
            self.fanout = fanout = worker.app.broker.fanout()
        except ImproperlyConfigured as exc:
            logger.warning("No remote control nor events for this worker: %s", exc)
            return
        worker.events = EventDispatcher(
            worker.app, worker.hostname, enabled=self.task_events or not self.without_heartbeat,
            groups=None if self.task_events else {"worker"}, buffer_group={"task"},
            fanout=fanout,
        )  # fmt: skip
        worker.monitor = monitor = TaskMonitor(worker, worker.events, self.heartbeat_interval)
        monitor.install()
        if worker.consumer is not None:
            worker.consumer.monitor = monitor
        if worker.app.conf.worker_enable_remote_control:
            self.pidbox = Pidbox(worker, fanout)
            self.pidbox.start()
            worker.state.settle_control = self.pidbox.settle
        else:
            logger.info("Remote control is off (worker_enable_remote_control): no pidbox")
        if not worker.app.broker.capabilities.keeps_revocations and not self.without_mingle:
            self._mingle()
        monitor.heartbeat("worker-online")
        if not self.without_heartbeat:  # off even with task events on, as in Celery
            self._heart = threading.Thread(target=self._beat, name="caraway-heart", daemon=True)
            self._heart.start()

    def _mingle(self) -> None:
        """Ask the running workers for the ids they know are revoked (Celery's mingle)."""
        worker = self.worker
        try:
            replies = Control(worker.app, self.fanout).broadcast(
                "hello", {"from_node": worker.hostname, "revoked": {}}, reply=True,
                timeout=MINGLE_TIMEOUT,
            )  # fmt: skip
        except Exception as exc:
            logger.warning("Could not ask other workers for revoked ids: %s", exc)
            return
        learned = 0
        for reply in replies or ():
            for answer in reply.values():
                for task_id in (answer or {}).get("revoked") or ():
                    worker.state.revoke(str(task_id))
                    learned += 1
        if learned:
            logger.info("Learned %d revoked id(s) from other workers", learned)

    def _beat(self) -> None:
        monitor = self.worker.monitor
        while not self._stopped.wait(self.heartbeat_interval):
            if monitor is not None:
                monitor.heartbeat()

    def stop(self) -> None:
        self._stopped.set()
        worker = self.worker
        if self._heart is not None and self._heart is not threading.current_thread():
            self._heart.join(5)
        if self.pidbox is not None:
            worker.state.settle_control = None
            self.pidbox.stop()
        if worker.monitor is not None:
            worker.monitor.heartbeat("worker-offline")
            worker.monitor.uninstall()
        if worker.events is not None:
            worker.events.close()
        if self.fanout is not None:
            self.fanout.close()
