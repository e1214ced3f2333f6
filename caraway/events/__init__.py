"""Events: what workers (and producers, with ``task_send_sent_event``) tell the world.

``EventDispatcher`` sends, ``EventReceiver`` listens, ``State`` keeps the picture.
"""

from __future__ import annotations

from caraway.events.dispatcher import EventDispatcher
from caraway.events.event import Event, group_from
from caraway.events.receiver import EventReceiver
from caraway.events.state import State

__all__ = ["Event", "EventDispatcher", "EventReceiver", "State", "group_from"]
