"""``app.connection()``: a handle naming the app's broker, for APIs that take a connection.

Celery code opens ``with app.connection() as conn:`` and hands ``conn`` to
``app.events.Receiver`` or ``app.control`` calls. caraway's engines keep their own
connections (pooled, reconnected, made safe across forks), so this handle holds none: it
checks the broker can be reached when asked to, and says so when code reaches for kombu's
channel-level API, instead of pretending to have one.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any

from caraway.exceptions import CarawayError, ImproperlyConfigured
from caraway.utils.text import mask_url

if TYPE_CHECKING:
    from caraway.app import Caraway

_NO_CHANNELS = (
    "caraway connections have no kombu channels ({what}): the engines keep their own "
    "connections. Send with task.apply_async / app.send_task, listen with app.events.Receiver, "
    "control workers with app.control"
)


class Connection:
    """The broker of ``app``, for code written against Celery's connection objects."""

    def __init__(self, app: Caraway) -> None:
        self.app = app

    def __enter__(self) -> Connection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def connect(self) -> Connection:
        """Reach the broker now; ``Unreachable`` (an ``OperationalError``) if it cannot be."""
        self.app.broker.connect()
        return self

    def ensure_connection(self, *args: Any, **kwargs: Any) -> Connection:
        """As ``connect``: retrying is the engines' job, under the broker_connection_* settings."""
        if args or kwargs:
            raise TypeError(
                "ensure_connection() takes no retry options in caraway: set "
                "broker_connection_retry / broker_connection_max_retries instead"
            )
        return self.connect()

    def as_uri(self, include_password: bool = False) -> str:
        url = self.app.broker.describe()
        return url if include_password else mask_url(url)

    def release(self) -> None:
        """Nothing to give back: the engines own the connections."""

    close = release

    @property
    def default_channel(self) -> Any:
        raise CarawayError(_NO_CHANNELS.format(what="default_channel"))

    def channel(self) -> Any:
        raise CarawayError(_NO_CHANNELS.format(what="channel()"))

    def __repr__(self) -> str:
        return f"<caraway.Connection {self.as_uri()}>"


def connection_for(app: Caraway, url: str | None = None, **options: Any) -> Connection:
    """``app.connection(url)``: only the app's own broker can be named."""
    if options:
        raise TypeError(
            f"app.connection() does not take {', '.join(sorted(options))} in caraway: the "
            "broker_* settings configure the broker connection"
        )
    if url is not None and url != app.conf.broker_url:
        raise ImproperlyConfigured(
            f"app.connection({mask_url(url)!r}) names another broker than this app's "
            f"({mask_url(str(app.conf.broker_url))!r}): make an app for it, "
            "Celery(broker=url), and use its connection()"
        )
    return Connection(app)
