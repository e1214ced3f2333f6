"""How the dashboard is served, and the one rule that keeps it safe by default.

It binds loopback unless told otherwise, and refuses any other address without a way to
authenticate (basic auth or a token): a dashboard can revoke tasks and shut workers down.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from caraway.dashboard.store import Limits
from caraway.exceptions import ImproperlyConfigured
from caraway.utils.home import home_folder

DEFAULT_PORT = 5555
DEFAULT_ADDRESS = "127.0.0.1"


def default_store_path() -> Path:
    """``$CARAWAY_HOME/dashboard.sqlite3``, else in caraway's folder under ``$XDG_DATA_HOME``
    (beside the embedded broker's file)."""
    home = home_folder()
    if home is None:
        data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        home = Path(data) / "caraway"
    return home / "dashboard.sqlite3"


def parse_basic_auth(text: str | None) -> tuple[tuple[str, str], ...]:
    """Flower's ``--basic-auth=user1:password1,user2:password2``."""
    pairs = []
    for item in (text or "").split(","):
        if not item.strip():
            continue
        user, sep, password = item.strip().partition(":")
        if not sep or not user or not password:
            raise ImproperlyConfigured(
                f"--basic-auth takes user:password pairs separated by commas, got {item!r}"
            )
        pairs.append((user, password))
    return tuple(pairs)


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


def normalise_prefix(prefix: str) -> str:
    """``dash``, ``/dash/`` → ``/dash``; empty stays empty."""
    prefix = prefix.strip().strip("/")
    return f"/{prefix}" if prefix else ""


@dataclass(frozen=True)
class DashboardConfig:
    address: str = DEFAULT_ADDRESS
    port: int = DEFAULT_PORT
    url_prefix: str = ""
    basic_auth: tuple[tuple[str, str], ...] = ()
    auth_token: str | None = None
    read_only: bool = False
    store_path: Path = field(default_factory=default_store_path)
    limits: Limits = field(default_factory=Limits)
    #: Seconds the Workers page waits for workers' answers (pool, queues).
    inspect_timeout: float = 1.0

    @property
    def needs_auth(self) -> bool:
        return bool(self.basic_auth or self.auth_token)

    def check(self) -> None:
        """Refuse a setup that would expose the dashboard to the network unauthenticated."""
        if not is_loopback(self.address) and not self.needs_auth:
            raise ImproperlyConfigured(
                f"the dashboard will not listen on {self.address} without authentication:"
                " pass --basic-auth=user:password or --auth-token=TOKEN (or bind 127.0.0.1)"
            )
