"""Task ids and delivery tags: random (version 4) UUIDs in their canonical text form."""

from __future__ import annotations

import os

_VARIANT = "89ab"


def new_id() -> str:
    """``str(uuid.uuid4())`` in a third of the time: a send makes two of them."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"
