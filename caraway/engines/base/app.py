"""What an engine reads from the app that makes it.

Engines sit below the app, so they name the few members they use instead of the app's class:
a result backend reads its settings from ``conf`` and, for replies, the app's ``oid``; the
registry makes the app's broadcast engine from its ``broker``. ``caraway.Caraway`` has them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from caraway.config import Configuration
    from caraway.engines.base.broker import Broker


class EngineApp(Protocol):
    """The app as an engine sees it."""

    #: The app's settings (``result_serializer``, ``result_expires``, ...).
    conf: Configuration

    @property
    def oid(self) -> str:
        """The app's id in ``reply_to`` (the ``rpc://`` backend's reply queue)."""
        ...

    @property
    def broker(self) -> Broker:
        """The app's broker, made on first use."""
        ...
