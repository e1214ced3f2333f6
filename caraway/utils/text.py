"""Text helpers for messages people read: suggestions, masking, truncation."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

# The password runs to the last "@" of its URL (a password may hold "@"); ";" separates URLs.
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z0-9+.-]+://)(?P<user>[^:@/;]*):(?P<password>[^/;]+)@")


def did_you_mean(word: str, choices: Iterable[str], cutoff: float = 0.6) -> str:
    """`` Did you mean 'x'?`` when a close choice exists, else ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=cutoff)
    return f" Did you mean {close[0]!r}?" if close else ""


def mask_url(url: str, mask: str = "**") -> str:
    """The URL with any password replaced by ``mask``, for logs and errors."""
    return _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{mask}@", url)


def truncate(text: str, limit: int = 1024) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
