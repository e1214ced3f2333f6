"""The asyncio client API: sends and results to ``await``, that never block the event loop.

``await add.delay_async(2, 2)``, ``await add.send_async(args, kwargs, countdown=10)`` (the
twin of ``apply_async``) and ``await app.send_task_async(name, ...)`` build the message as
their blocking forms do (routing, options, signals) and publish it through the engine's
asyncio client: redis-py's for Redis; engines without one publish in a worker thread.
``await result.get_async(timeout=...)`` waits the same way. (A result is not itself
awaitable: tasks and signal receivers may return one, as in Celery, and the worker awaits
what they return when it is awaitable.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from caraway import signals
from caraway.calling import collecting, publish_pauses
from caraway.exceptions import OperationalError

if TYPE_CHECKING:
    from caraway.app import Caraway
    from caraway.engines.base.broker import Outgoing
    from caraway.result import AsyncResult


async def send_async(app: Caraway, send: Callable[[], AsyncResult[Any]], options: dict[str, Any]
                     ) -> AsyncResult[Any]:  # fmt: skip
    """Run ``send`` (a blocking send) collecting its message, then publish it awaitably."""
    with collecting() as collected:
        result = send()
    if collected:  # nothing to publish when the call ran eagerly
        await _publish_retrying(app, [outgoing for outgoing, _ in collected], options)
        for _, after in collected:
            signals.after_task_publish.send(**after)
    return result


async def _publish_retrying(app: Caraway, batch: list[Outgoing], options: dict[str, Any]) -> None:
    """``publish`` with the ``retry_policy`` of the blocking send, pausing with asyncio."""
    for pause in publish_pauses(app, options):
        try:
            await app.broker.publish_async(batch)
            return
        except OperationalError:
            await asyncio.sleep(pause)
    await app.broker.publish_async(batch)
