"""``app.events``: Celery's entry point to events, bound to one app.

The real-time monitoring recipe in Celery's docs runs unchanged::

    state = app.events.State()
    with app.connection() as connection:
        receiver = app.events.Receiver(connection, handlers={"*": state.event})
        receiver.capture(limit=None, timeout=None, wakeup=True)

caraway has no kombu channels: a connection or channel given here only tells which broker
to listen on, and it must be this app's (anything else is refused rather than ignored).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from caraway.events.dispatcher import EventDispatcher
from caraway.events.receiver import EventReceiver, Handler
from caraway.events.state import State
from caraway.exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    from caraway.app import Caraway


class Events:
    """``Receiver``, ``Dispatcher``, ``State`` and ``default_dispatcher`` for one app."""

    def __init__(self, app: Caraway) -> None:
        self.app = app

    def _check(self, connection: Any) -> None:
        """A connection (or app) of another app names another broker: say so instead of
        listening on ours."""
        owner = connection if hasattr(connection, "conf") else getattr(connection, "app", None)
        if connection is not None and owner is not None and owner is not self.app:
            raise ImproperlyConfigured(
                "this connection belongs to another app; use app.connection() of the app "
                "whose events you want"
            )

    def Receiver(
        self,
        channel: Any = None,
        handlers: Mapping[str, Handler] | None = None,
        routing_key: str = "#",
        node_id: str | None = None,
        queue_prefix: str | None = None,
        accept: Any = None,
        **ignored: Any,
    ) -> EventReceiver:
        """Listen to events; ``channel`` (a connection) is optional here."""
        self._check(channel)
        self._check(ignored.pop("app", None))
        _refuse_unknown("Receiver", ignored)
        prefix = queue_prefix or str(self.app.conf.event_queue_prefix or "celeryev")
        return EventReceiver(self.app, handlers, routing_key, node_id, prefix, accept)

    def Dispatcher(
        self,
        connection: Any = None,
        hostname: str | None = None,
        enabled: bool = True,
        groups: Iterable[str] | None = None,
        buffer_group: Iterable[str] | None = None,
        **ignored: Any,
    ) -> EventDispatcher:
        """Send events (``dispatcher.send("custom-event", field=...)``)."""
        self._check(connection)
        self._check(ignored.pop("channel", None))
        self._check(ignored.pop("app", None))
        _refuse_unknown("Dispatcher", ignored)
        return EventDispatcher(self.app, hostname, enabled, groups, buffer_group)

    def State(self, **options: Any) -> State:
        """The cluster picture built from events (workers, tasks)."""
        return State(**options)

    @contextmanager
    def default_dispatcher(
        self, hostname: str | None = None, enabled: bool = True, **options: Any
    ) -> Iterator[EventDispatcher]:
        """A dispatcher for the duration of a ``with`` block; buffered events are sent at
        its end."""
        dispatcher = self.Dispatcher(None, hostname, enabled, **options)
        try:
            yield dispatcher
        finally:
            dispatcher.close()


def _refuse_unknown(what: str, given: Mapping[str, Any]) -> None:
    """Celery's kombu-level options (serializer, queue_ttl, ...) would do nothing here: say so
    rather than accept them (the event_* settings cover what caraway supports)."""
    if given:
        raise TypeError(
            f"app.events.{what}() does not take {', '.join(sorted(given))} in caraway; the "
            "event_* settings (event_queue_ttl, event_queue_prefix, ...) configure events"
        )
