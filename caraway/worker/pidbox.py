"""The worker's control consumer: a thread that answers pidbox requests (docs/celery-wire.md §7).

It binds ``<hostname>.celery.pidbox`` to the ``celery.pidbox`` fanout before the worker
reports ready, so a request sent once the worker is up always arrives. Requests run one at
a time, in this thread, never in the consumer's: a worker busy with tasks still answers.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from caraway.control import mailbox
from caraway.engines.base.fanout import Exchange
from caraway.utils.log import FirstFailure
from caraway.worker.commands import dispatch

if TYPE_CHECKING:
    from caraway.engines.base.fanout import Fanout, Subscription
    from caraway.protocol import Message
    from caraway.worker.worker import Worker

logger = logging.getLogger("caraway.worker")

#: Longest a read blocks, so a stop is noticed within this many seconds.
READ_SLICE = 0.5
#: Longest a task waits for requests already received to be handled, and the poll step.
SETTLE_LIMIT = 0.05
SETTLE_POLL = 0.0002


class Pidbox:
    def __init__(self, worker: Worker, fanout: Fanout) -> None:
        self.worker = worker
        self.fanout = fanout
        self.clock = mailbox.clock_of(worker.app)
        self._subscription: Subscription | None = None
        self._stopped = threading.Event()
        self._failures = FirstFailure(logger)
        self._thread = threading.Thread(target=self._run, name="caraway-pidbox", daemon=True)

    def start(self) -> None:
        """Bind now (in the caller's thread), then read in the background.

        A broker that cannot be reached now does not stop the worker: the thread keeps
        trying to bind, and remote control starts working once it can.
        """
        self._bind()
        self._thread.start()

    def _bind(self) -> bool:
        binding = mailbox.node_binding(self.worker.app, self.worker.hostname)
        try:
            subscription = self.fanout.subscribe(mailbox.PIDBOX, binding)
        except Exception as exc:
            self._failures.failed("Remote control: cannot bind %s yet (%s)", binding.queue, exc)
            return False
        self._failures.recovered()
        if self._stopped.is_set():  # stopped meanwhile: stop() will not see this one
            subscription.close()
            return False
        self._subscription = subscription
        return True

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(READ_SLICE * 4)
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            subscription.close()

    def settle(self, limit: float = SETTLE_LIMIT) -> None:
        """Wait (at most ``limit`` s) until the requests that already reached this worker
        are handled. A task sent right after a revoke may arrive a fraction of a millisecond
        before the revoke, on the other connection; the consumer asks before it runs one
        that a revoke could name (Celery reads both on one connection, in order)."""
        subscription = self._subscription
        if subscription is None or threading.current_thread() is self._thread:
            return
        deadline = time.monotonic() + limit
        time.sleep(0)  # lets the reader take what it has just received off the socket
        while subscription.pending() and time.monotonic() < deadline:
            time.sleep(SETTLE_POLL)

    def _run(self) -> None:
        while not self._stopped.is_set():
            subscription = self._subscription
            if subscription is None:
                if not self._bind():
                    self._stopped.wait(1.0)
                continue
            try:
                messages = subscription.get(READ_SLICE)
            except Exception as exc:  # a lost broker: keep trying, the worker goes on
                self._failures.failed("Remote control: cannot read requests (%s); retrying", exc)
                self._stopped.wait(1.0)
                continue
            self._failures.recovered()
            for message in messages:
                self.handle(message)

    def handle(self, message: Message) -> Any:
        """Run one request if it is for this worker and still valid; reply if asked."""
        try:
            request = mailbox.read_request(message)
        except Exception as exc:
            logger.warning("Remote control: ignoring a malformed request: %s", exc)
            return None
        self.clock.adjust(request.clock)
        hostname = self.worker.hostname
        if not request.is_for(hostname):
            return None
        if request.expires and request.expires < time.time():
            logger.info("Remote control: %s request expired, ignored", request.method)
            return None
        logger.debug("Remote control: %s %r", request.method, request.arguments)
        result = dispatch(self.worker, request.method, request.arguments)
        if request.ticket and request.reply_to:
            self._reply(request, result)
        return result

    def _reply(self, request: mailbox.Request, result: Any) -> None:
        assert request.reply_to is not None
        assert request.ticket is not None
        exchange = mailbox.REPLY
        name = request.reply_to.get("exchange") or exchange.name
        if name != exchange.name:
            exchange = Exchange(name, "direct")
        message = mailbox.reply_message(
            self.worker.hostname, result, request.ticket, self.clock.forward()
        )
        try:
            self.fanout.publish(exchange, str(request.reply_to.get("routing_key") or ""), message)
        except Exception as exc:
            logger.warning("Remote control: could not reply to %s: %s", request.method, exc)
