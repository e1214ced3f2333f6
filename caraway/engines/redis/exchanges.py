"""Exchanges on Redis, as kombu emulates them (docs/celery-wire.md §3.5, §3.6).

A direct or topic exchange is a binding table, the set ``_kombu.binding.<exchange>`` of
``routing_key SEP pattern SEP queue`` members: the publisher reads it and LPUSHes the message
to every bound queue whose key matches. kombu's consumers match topic bindings with the
stored ``pattern``, a regular expression, so ours are written in the same form. A fanout
exchange is a pub/sub channel ``/<db>.<exchange>/<routing_key>``: a ``Broadcast`` queue gets
what is published there while its worker runs, and a ``BroadcastRelay`` moves it into the
queue's own list, where the worker takes it like any other message.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from caraway.engines.base.fanout import Exchange, matches
from caraway.engines.base.topology import QueueDeclaration
from caraway.engines.redis.client import CONNECTION_ERRORS

logger = logging.getLogger("caraway.broker.redis")

#: Longest the relay blocks in one pub/sub read, so ``stop`` is noticed quickly.
RELAY_SLICE = 0.5
#: Longest a declaration waits for Redis to confirm a subscription.
SUBSCRIBE_TIMEOUT = 5.0


def topic_pattern(binding_key: str) -> str:
    """The regular expression kombu stores for a topic binding: words joined by escaped
    dots, ``*`` one word, ``#`` anything (kombu's reading: ``a.#`` needs ``a.`` and more)."""
    words = {"*": r"[^\.]+", "#": r".*?"}
    return "^" + r"\.".join(words.get(w, re.escape(w)) for w in binding_key.split(".")) + "$"


def binding_member(declaration: QueueDeclaration, sep: str) -> str:
    pattern = topic_pattern(declaration.routing_key) if declaration.exchange_type == "topic" else ""
    return f"{declaration.routing_key}{sep}{pattern}{sep}{declaration.queue}"


def bound_queues(members: Iterable[Any], kind: str, routing_key: str, sep: str) -> list[str]:
    """The queues of a binding table a message with ``routing_key`` reaches."""
    exchange = Exchange("", kind)
    found: dict[str, None] = {}
    for member in members:
        text = member.decode() if isinstance(member, bytes) else str(member)
        key, _pattern, queue = text.split(sep, 2)
        if matches(exchange, key, routing_key):
            found[queue] = None
    return list(found)


def fanout_channel(prefix: str, db: int, exchange: str, routing_key: str) -> str:
    """kombu's pub/sub channel of a fanout exchange (with ``fanout_patterns``)."""
    base = f"{prefix}/{db}.{exchange}"
    return f"{base}/{routing_key}" if routing_key else base


def _glob_literal(text: str) -> str:
    return re.sub(r"([\\*?\[\]])", r"\\\1", text)


class BroadcastRelay:
    """Moves what is published on a fanout exchange into a broadcast queue's own list.

    It subscribes to the exchange's channel with and without a routing key (a fanout
    ignores the key; kombu's publishers put the queue's key in the channel name).
    """

    def __init__(
        self,
        client: Any,
        channel: str,
        push: Callable[[bytes], None],
        describe: str,
    ) -> None:
        self._pubsub = client.pubsub()
        self._push = push
        self._describe = describe
        self._stopped = threading.Event()
        patterns = [_glob_literal(channel), _glob_literal(channel) + "/*"]
        self._pubsub.psubscribe(*patterns)
        confirmed = 0
        deadline = time.monotonic() + SUBSCRIBE_TIMEOUT
        # Only once Redis confirmed are later messages certain to arrive.
        while confirmed < len(patterns) and time.monotonic() < deadline:
            reply = self._pubsub.get_message(timeout=0.1)
            if reply is not None and reply.get("type") == "psubscribe":
                confirmed += 1
        self._thread = threading.Thread(target=self._run, name="caraway-bcast", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                raw = self._pubsub.get_message(timeout=RELAY_SLICE)
                if raw is not None and raw.get("type") == "pmessage":
                    self._push(raw["data"])
            except CONNECTION_ERRORS as exc:  # redis-py subscribes again on the next read
                logger.warning("Broadcast channel %s: %s; subscribing again", self._describe, exc)
                self._stopped.wait(1.0)
            except Exception:  # a relay that dies would silently stop every broadcast
                logger.exception("Broadcast channel %s: could not relay a message", self._describe)

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(RELAY_SLICE + 1.0)
        with contextlib.suppress(*CONNECTION_ERRORS):
            self._pubsub.close()
