"""Sending with ``task_protocol = 1``: the legacy message, and chains sent as links.

Protocol 1 has no ``chain`` field, so a chain travels as Celery sends it then: each step
carries the next one as a callback, which carries the one after it, and so on. Workers of
either protocol run callbacks, so a protocol-1 chain runs on any Celery or caraway worker.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import TYPE_CHECKING, Any

from caraway.exceptions import ImproperlyConfigured
from caraway.protocol import Message, build_task_message_v1

if TYPE_CHECKING:
    from caraway.app import Caraway


def chain_as_link(chain: list[Any]) -> dict[str, Any]:
    """The rest of a chain (in the embed's order: the next step last) as the next step's
    signature dict, whose callbacks run the steps after it in turn.

    Dicts, not signatures: the steps arrive in that form, and the calling layer stays below
    the canvas. A chord's link is its body's, as ``chord.link`` makes it."""
    following: dict[str, Any] | None = None
    for step in chain:  # the step that runs last comes first
        sig = copy.deepcopy(dict(step))
        if following is not None:
            _link(sig, following)
        following = sig
    if following is None:
        raise ValueError("cannot send an empty chain")
    return following


def _link(sig: dict[str, Any], callback: dict[str, Any]) -> None:
    target = sig
    if sig.get("subtask_type") == "chord":
        target = sig["kwargs"]["body"] = copy.deepcopy(dict(sig["kwargs"]["body"]))
    options = target["options"] = dict(target.get("options") or {})
    options["link"] = [*(options.get("link") or ()), callback]


def build(
    app: Caraway,
    name: str,
    task_id: str,
    args: Any,
    kwargs: dict[str, Any],
    options: dict[str, Any],
    *,
    callbacks: list[dict[str, Any]] | None,
    errbacks: list[dict[str, Any]] | None,
    eta: datetime | None,
    expires: datetime | None,
    priority: int | None,
    serializer: str,
    now: datetime,
) -> tuple[Message, dict[str, Any]]:
    """The protocol-1 message of one call and its body (what the publish signals see)."""
    if app.conf.task_protocol != 1:
        raise ImproperlyConfigured(
            f"task_protocol = {app.conf.task_protocol!r}: Celery's task protocols are 1 and 2"
        )
    chain = options.get("chain")
    if chain:
        callbacks = [*(callbacks or ()), chain_as_link(chain)]
    return build_task_message_v1(
        name,
        task_id,
        args,
        kwargs,
        eta=eta,
        expires=expires,
        group=options.get("group_id"),
        group_index=options.get("group_index"),
        retries=int(options.get("retries") or 0),
        time_limit=options.get("time_limit"),
        soft_time_limit=options.get("soft_time_limit"),
        callbacks=callbacks,
        errbacks=errbacks,
        chord=options.get("chord"),
        reply_to=options.get("reply_to") or app.thread_oid,
        priority=priority,
        serializer=serializer,
        compression=options.get("compression") or app.conf.task_compression,
        headers=options.get("headers"),
        now=now,
    )
