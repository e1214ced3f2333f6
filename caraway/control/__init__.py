"""``app.control``: broadcast commands to workers and collect their replies (Celery's API).

Every command travels as a pidbox request (``caraway.control.mailbox``). With ``reply=True`` the
caller gets a list of ``{hostname: reply}``, one per worker that answered within
``timeout`` s (or as soon as ``limit`` answered; with a ``destination`` list, the limit is its
length; without either, on an engine that counts the receivers of a broadcast (Redis), that
count). ``revoke`` also records the ids in the broker, so workers that start later, or
that missed the broadcast, still never run them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from caraway.control import mailbox
from caraway.current import get_current_app
from caraway.engines.registry import fanout_of
from caraway.exceptions import DecodeError
from caraway.routing import queue_names

if TYPE_CHECKING:
    from caraway.app import Caraway
    from caraway.engines.base.fanout import Fanout

Replies = list[dict[str, Any]]
#: Celery's default ``signal`` of ``revoke(terminate=True)``.
TERM_SIGNAME = "SIGTERM"


class Control:
    def __init__(self, app: Caraway, fanout: Fanout | None = None) -> None:
        self.app = app
        self._fanout = fanout  # a worker passes its own; clients use the app's

    @property
    def fanout(self) -> Fanout:
        return self._fanout if self._fanout is not None else fanout_of(self.app)

    # --- the primitive ---------------------------------------------------------------------

    def broadcast(
        self,
        command: str,
        arguments: dict[str, Any] | None = None,
        destination: Sequence[str] | str | None = None,
        connection: Any = None,
        reply: bool = False,
        timeout: float = 1.0,
        limit: int | None = None,
        callback: Callable[[dict[str, Any]], Any] | None = None,
        channel: Any = None,
        pattern: str | None = None,
        matcher: str | None = None,
        **extra_kwargs: Any,
    ) -> Replies | None:
        """Send ``command`` to the workers; with ``reply``, the list of their answers."""
        if isinstance(destination, str):
            destination = [destination]
        if destination is not None:
            destination = list(destination)
            if limit is None:
                limit = len(destination)
        request = mailbox.Request(
            method=command,
            arguments={**(arguments or {}), **extra_kwargs},
            destination=destination,
            pattern=pattern,
            matcher=matcher,
            clock=mailbox.clock_of(self.app).forward(),
            expires=time.time() + timeout if timeout else 0.0,
        )
        fanout = self.fanout
        if not reply:
            fanout.publish_routed(mailbox.PIDBOX, "", mailbox.request_message(request))
            return None
        reply_id = str(uuid.uuid4())
        request.ticket = str(uuid.uuid4())
        request.reply_to = {"exchange": mailbox.REPLY.name, "routing_key": reply_id}
        subscription = fanout.subscribe(mailbox.REPLY, mailbox.reply_binding(self.app, reply_id))
        try:
            reached = fanout.publish_counted(mailbox.PIDBOX, "", mailbox.request_message(request))
            if limit is None and reached is not None:
                limit = reached  # every worker that got it has answered: nobody else will
            return self._collect(subscription, request.ticket, timeout, limit, callback)
        finally:
            subscription.close()

    def _collect(
        self,
        subscription: Any,
        ticket: str,
        timeout: float,
        limit: int | None,
        callback: Callable[[dict[str, Any]], Any] | None,
    ) -> Replies:
        replies: Replies = []
        deadline = time.monotonic() + timeout
        clock = mailbox.clock_of(self.app)
        while limit is None or len(replies) < limit:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for message in subscription.get(remaining):
                try:
                    got, body = mailbox.read_reply(message)
                except DecodeError:
                    continue
                if got != ticket or not body:
                    continue  # a late answer to an earlier request
                clock.adjust(int(message.headers.get("clock") or 0))
                if callback is not None:
                    callback(body)
                replies.append(body)
        return replies if limit is None else replies[:limit]

    # --- Celery's commands ------------------------------------------------------------------

    def inspect(self, **kwargs: Any) -> Inspect:
        return Inspect(app=self.app, **kwargs)

    def ping(
        self, destination: Sequence[str] | None = None, timeout: float = 1.0, **kwargs: Any
    ) -> Replies:
        return (
            self.broadcast("ping", reply=True, destination=destination, timeout=timeout, **kwargs)
            or []
        )

    def revoke(
        self,
        task_id: str | Iterable[str],
        destination: Sequence[str] | None = None,
        terminate: bool = False,
        signal: str | None = TERM_SIGNAME,
        **kwargs: Any,
    ) -> Replies | None:
        """Tell every worker not to run these tasks (and with ``terminate``, to stop them).

        The ids are also stored in the broker where it keeps revocations, so a worker that
        starts later honours them too.
        """
        ids = [task_id] if isinstance(task_id, str) else list(task_id)
        if destination is None:
            self.app.broker.revoke(ids, terminate=terminate)
        return self.broadcast(
            "revoke", destination=destination,
            arguments={"task_id": ids if len(ids) != 1 else ids[0], "terminate": terminate,
                       "signal": signal or TERM_SIGNAME},
            **kwargs,
        )  # fmt: skip

    def revoke_by_stamped_headers(
        self,
        headers: dict[str, Any],
        destination: Sequence[str] | None = None,
        terminate: bool = False,
        signal: str | None = TERM_SIGNAME,
        **kwargs: Any,
    ) -> Replies | None:
        """Tell every worker not to run tasks carrying any of these stamp values
        (``{"name": value or [values]}``), and with ``terminate`` to stop running ones.

        Workers keep the flags in memory: a worker started later does not know them.
        """
        return self.broadcast(
            "revoke_by_stamped_headers", destination=destination,
            arguments={"headers": headers, "terminate": terminate, "signal": signal},
            **kwargs,
        )  # fmt: skip

    def terminate(
        self,
        task_id: str | Iterable[str],
        destination: Sequence[str] | None = None,
        signal: str = TERM_SIGNAME,
        **kwargs: Any,
    ) -> Replies | None:
        return self.revoke(task_id, destination=destination, terminate=True, signal=signal,
                           **kwargs)  # fmt: skip

    def rate_limit(
        self,
        task_name: str,
        rate_limit: str | float | int,
        destination: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> Replies | None:
        return self.broadcast(
            "rate_limit", destination=destination,
            arguments={"task_name": task_name, "rate_limit": rate_limit}, **kwargs,
        )  # fmt: skip

    def time_limit(
        self,
        task_name: str,
        soft: float | None = None,
        hard: float | None = None,
        destination: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> Replies | None:
        return self._reply(
            "time_limit", {"task_name": task_name, "soft": soft, "hard": hard}, destination,
            kwargs,
        )  # fmt: skip

    def add_consumer(
        self,
        queue: str,
        exchange: str | None = None,
        exchange_type: str = "direct",
        routing_key: str | None = None,
        options: dict[str, Any] | None = None,
        destination: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> Replies | None:
        arguments = {"queue": queue, "exchange": exchange, "exchange_type": exchange_type,
                     "routing_key": routing_key, **(options or {})}  # fmt: skip
        return self._reply("add_consumer", arguments, destination, kwargs)

    def cancel_consumer(
        self, queue: str, destination: Sequence[str] | None = None, **kwargs: Any
    ) -> Replies | None:
        return self._reply("cancel_consumer", {"queue": queue}, destination, kwargs)

    def enable_events(
        self, destination: Sequence[str] | None = None, **kwargs: Any
    ) -> Replies | None:
        return self.broadcast("enable_events", {}, destination, **kwargs)

    def disable_events(
        self, destination: Sequence[str] | None = None, **kwargs: Any
    ) -> Replies | None:
        return self.broadcast("disable_events", {}, destination, **kwargs)

    def pool_grow(
        self, n: int = 1, destination: Sequence[str] | None = None, **kwargs: Any
    ) -> Replies | None:
        return self.broadcast("pool_grow", {"n": n}, destination, **kwargs)

    def pool_shrink(
        self, n: int = 1, destination: Sequence[str] | None = None, **kwargs: Any
    ) -> Replies | None:
        return self.broadcast("pool_shrink", {"n": n}, destination, **kwargs)

    def autoscale(
        self, max: int, min: int, destination: Sequence[str] | None = None, **kwargs: Any
    ) -> Replies | None:
        return self.broadcast("autoscale", {"max": max, "min": min}, destination, **kwargs)

    def shutdown(self, destination: Sequence[str] | None = None, **kwargs: Any) -> Replies | None:
        return self.broadcast("shutdown", {}, destination, **kwargs)

    def pool_restart(
        self,
        modules: Sequence[str] | None = None,
        reload: bool = False,
        reloader: Any = None,
        destination: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> Replies | None:
        arguments = {"modules": list(modules or ()), "reload": reload}
        return self.broadcast("pool_restart", arguments, destination, **kwargs)

    def heartbeat(self, destination: Sequence[str] | None = None, **kwargs: Any) -> Replies | None:
        return self.broadcast("heartbeat", {}, destination, **kwargs)

    def election(
        self, id: str, topic: str, action: Any = None, connection: Any = None
    ) -> Replies | None:
        return self.broadcast("election", {"id": id, "topic": topic, "action": action})

    def _reply(
        self,
        command: str,
        arguments: dict[str, Any],
        destination: Sequence[str] | None,
        kwargs: dict[str, Any],
    ) -> Replies | None:
        """Commands whose Celery counterpart waits for replies by default."""
        kwargs.setdefault("reply", True)
        return self.broadcast(command, arguments, destination, **kwargs)

    def purge(self, connection: Any = None) -> int:
        """Delete waiting messages from the queues the app knows; returns how many."""
        return sum(self.purge_queues().values())

    def purge_queues(self, queues: Iterable[str] | None = None) -> dict[str, int]:
        """Delete waiting messages from ``queues`` (default: the app's); ``{queue: count}``."""
        if queues is None:
            queues = queue_names(self.app.conf.task_queues) or {self.app.conf.task_default_queue}
        return {queue: self.app.broker.purge(queue) for queue in sorted(set(queues))}

    discard_all = purge


class Inspect:
    """Questions to workers; each returns ``{hostname: answer}``, or None if none answered."""

    def __init__(
        self,
        destination: Sequence[str] | str | None = None,
        timeout: float = 1.0,
        callback: Callable[[dict[str, Any]], Any] | None = None,
        connection: Any = None,
        app: Caraway | None = None,
        limit: int | None = None,
        pattern: str | None = None,
        matcher: str | None = None,
    ) -> None:
        if app is None:
            app = get_current_app()
        self.app = app
        self.destination = [destination] if isinstance(destination, str) else destination
        self.timeout = timeout
        self.callback = callback
        self.limit = limit
        self.pattern = pattern
        self.matcher = matcher

    def _request(self, command: str, **arguments: Any) -> dict[str, Any] | None:
        replies = self.app.control.broadcast(
            command, arguments=arguments, destination=self.destination, callback=self.callback,
            limit=self.limit, timeout=self.timeout, reply=True, pattern=self.pattern,
            matcher=self.matcher,
        )  # fmt: skip
        merged: dict[str, Any] = {}
        for reply in replies or ():
            merged.update(reply)
        return merged or None

    def report(self) -> dict[str, Any] | None:
        return self._request("report")

    def clock(self) -> dict[str, Any] | None:
        return self._request("clock")

    def active(self, safe: bool | None = None) -> dict[str, Any] | None:
        return self._request("active", safe=safe)

    def scheduled(self, safe: bool | None = None) -> dict[str, Any] | None:
        return self._request("scheduled")

    def reserved(self, safe: bool | None = None) -> dict[str, Any] | None:
        return self._request("reserved")

    def stats(self) -> dict[str, Any] | None:
        return self._request("stats")

    def revoked(self) -> dict[str, Any] | None:
        return self._request("revoked")

    def registered(self, *taskinfoitems: str) -> dict[str, Any] | None:
        return self._request("registered", taskinfoitems=list(taskinfoitems))

    registered_tasks = registered

    def ping(self, destination: Sequence[str] | str | None = None) -> dict[str, Any] | None:
        if destination:
            self.destination = [destination] if isinstance(destination, str) else destination
        return self._request("ping")

    def active_queues(self) -> dict[str, Any] | None:
        return self._request("active_queues")

    def query_task(self, *ids: str) -> dict[str, Any] | None:
        if len(ids) == 1 and not isinstance(ids[0], str):
            ids = tuple(ids[0])
        return self._request("query_task", ids=list(ids))

    def conf(self, with_defaults: bool = False) -> dict[str, Any] | None:
        return self._request("conf", with_defaults=with_defaults)

    def hello(self, from_node: str, revoked: Any = None) -> dict[str, Any] | None:
        return self._request("hello", from_node=from_node, revoked=revoked)

    def memsample(self) -> dict[str, Any] | None:
        return self._request("memsample")

    def memdump(self, samples: int = 10) -> dict[str, Any] | None:
        return self._request("memdump", samples=samples)
