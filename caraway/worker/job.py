"""A ``Job``: one delivered message, decoded and bound to the task that will run it."""

from __future__ import annotations

import inspect
import time
from typing import Any

from caraway.engines.base.broker import Delivery
from caraway.protocol import TaskCall
from caraway.request import Context
from caraway.task import Task
from caraway.worker.request import Request


class Job:
    """What the consumer schedules and the pool runs."""

    def __init__(
        self,
        delivery: Delivery,
        call: TaskCall,
        task: Task[Any, Any],
        hostname: str,
        request_class: type[Request] | None = None,
    ) -> None:
        self.delivery = delivery
        self.call = call
        self.task = task
        #: When this worker got the message (``time.time()``): queue-wait metrics start here.
        self.received_at = time.time()
        #: ``async def`` bodies run on an event loop (the asyncio pool's, or the thread's own).
        self.is_async = inspect.iscoroutinefunction(task.run)
        conf = task.app.conf
        acks_late = task.acks_late
        self.acks_late = bool(conf.task_acks_late if acks_late is None else acks_late)
        hard, soft = call.timelimit
        if hard is None:
            hard = task.time_limit if task.time_limit is not None else conf.task_time_limit
        if soft is None:
            soft = task.soft_time_limit
            if soft is None:
                soft = conf.task_soft_time_limit
        # float() here: a malformed ``timelimit`` header fails now, so the message is set
        # aside, instead of failing later in the pool where it would be redelivered.
        self.time_limit = None if hard is None else float(hard)
        self.soft_time_limit = None if soft is None else float(soft)
        # As Celery's worker reads them: the stamps named in ``stamped_headers``, none missing.
        stamped = list(call.headers.get("stamped_headers") or ())
        stamps = call.headers.get("stamps") or {}
        self.request = Context(
            id=call.id, task=call.name, args=call.args, kwargs=call.kwargs,
            retries=call.retries, is_eager=False, called_directly=False,
            eta=call.headers.get("eta"), expires=call.headers.get("expires"),
            hostname=hostname, correlation_id=call.correlation_id, root_id=call.root_id,
            parent_id=call.parent_id, group=call.group, group_index=call.group_index,
            chord=call.embed.get("chord"), chain=call.embed.get("chain"),
            callbacks=call.embed.get("callbacks"), errbacks=call.embed.get("errbacks"),
            headers=call.headers, properties=call.properties,
            timelimit=(self.time_limit, self.soft_time_limit), reply_to=call.reply_to,
            time_limit=self.time_limit, soft_time_limit=self.soft_time_limit,
            origin=call.origin, shadow=call.shadow, ignore_result=call.ignore_result,
            stamped_headers=stamped, stamps={name: stamps.get(name) for name in stamped},
            replaced_task_nesting=call.headers.get("replaced_task_nesting") or 0,
            acks_late=self.acks_late,
            delivery_info={
                "exchange": delivery.exchange,
                "routing_key": delivery.queue if delivery.routing_key is None
                else delivery.routing_key,
                "priority": delivery.message.priority, "redelivered": delivery.redelivered,
            },
        )  # fmt: skip
        #: The task's own ``Request``, whose hooks the worker calls (None: it has none).
        self.hooks = None if request_class is None else request_class(self)

    @property
    def id(self) -> str:
        return self.call.id

    @property
    def name(self) -> str:
        return self.call.name

    @property
    def eta(self) -> float | None:
        return self.call.eta.timestamp() if self.call.eta else None

    def describe(self) -> str:
        return f"{self.name}[{self.id}]"
