"""The text of ``app.bugreport()`` (and ``caraway report``): versions, engines and settings,
passwords and secrets masked, to paste into a bug report."""

from __future__ import annotations

import platform
from typing import TYPE_CHECKING

from caraway.engines.registry import DEFAULT_BROKER_URL
from caraway.exceptions import CarawayError
from caraway.utils.text import mask_url
from caraway.version import __version__

if TYPE_CHECKING:
    from caraway.app import Caraway


def bugreport(app: Caraway) -> str:
    """Versions, the broker and result store in use (or why they cannot be made), settings."""
    engines = []
    for label, make, url in (
        ("transport", lambda: app.broker, app.conf.broker_url or DEFAULT_BROKER_URL),
        ("results", lambda: app.backend, app.conf.result_backend or "(as the broker)"),
    ):
        try:
            described = make().describe()
        except CarawayError as exc:
            described = f"{mask_url(str(url))} ({exc})"
        engines.append(f"{label}: {described}")
    return (
        f"software -> caraway:{__version__} py:{platform.python_version()} "
        f"({platform.python_implementation()})\n"
        f"platform -> system:{platform.system()} arch:{platform.machine()}\n"
        f"app -> {app.main or '__main__'}\n" + "\n".join(engines) + "\n\n" + app.conf.humanize()
    )
