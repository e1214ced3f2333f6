"""Compressed result payloads (``result_compression``) in Celery 5.7's stored format.

A stored result has no message header to say how it was compressed, so the method travels
in front of the body: ``b"\\x00celery-compressed\\x00" + content type + b"\\x00" + body``.
No serializer's output starts with a NUL byte, so a payload stored uncompressed is never
taken for a compressed one; reading goes by that prefix, not by the reader's setting, so
results stay readable after the setting changes and by readers that never set it.
"""

from __future__ import annotations

from caraway import serialization

__all__ = ["MAGIC", "compress_payload", "decompress_payload"]

MAGIC = b"\x00celery-compressed\x00"


def compress_payload(payload: bytes, method: str) -> bytes:
    """``payload`` compressed with ``method`` (a name such as ``gzip`` or a mime type)."""
    body, content_type = serialization.compress(payload, method)
    return b"".join((MAGIC, content_type.encode(), b"\x00", body))


def decompress_payload(payload: bytes) -> bytes:
    """The serialized payload, whether it was stored compressed or not."""
    if not payload.startswith(MAGIC):
        return payload
    content_type, _, body = payload[len(MAGIC) :].partition(b"\x00")
    return serialization.decompress(body, content_type.decode())
