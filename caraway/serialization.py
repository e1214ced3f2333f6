"""Payloads to bytes and back: serializers, kombu's JSON type markers, and compression.

Names, mime types and content encodings match kombu's registries, so bodies read and write the
way Celery's do (docs/celery-wire.md §2). Optional codecs (msgpack, yaml, zstd, brotli) are imported
on first use and fail with the ``pip install`` line that fixes them.
"""

from __future__ import annotations

import base64
import bz2
import difflib
import importlib
import json
import lzma
import pickle
import threading
import uuid
import zlib
from collections.abc import Callable, Collection, Iterable, Iterator
from datetime import date, datetime, time
from decimal import Decimal
from types import ModuleType
from typing import Any, NamedTuple

import orjson

from caraway.exceptions import (
    BodyTooLarge,
    ContentDisallowed,
    DecodeError,
    EncodeError,
    ImproperlyConfigured,
    MissingExtra,
    SerializationError,
)

__all__ = [
    "compress",
    "content_type_for",
    "decompress",
    "disable_insecure_serializers",
    "dumps",
    "json_dumps",
    "json_loads",
    "loads",
    "normalize_accept",
    "register",
    "unregister",
]

# Errors we raise on purpose pass through the boundary handlers untouched.
_OURS = (SerializationError, MissingExtra)


def _optional(module: str, install: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(f"{module} is not installed; run: pip install {install}") from exc


def _unknown(kind: str, value: str, names: Iterable[str], aliases: Iterable[str]) -> Exception:
    valid = sorted(names)
    close = difflib.get_close_matches(value.strip().lower(), [*valid, *aliases], n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ImproperlyConfigured(f"Unknown {kind} {value!r}.{hint} Valid names: {', '.join(valid)}.")


# --- JSON with kombu's type markers (docs/celery-wire.md §2.2) ------------------------------------


def _marker(kind: str, value: Any) -> dict[str, Any]:
    return {"__type__": kind, "__value__": value}


def _json_default(obj: Any) -> Any:
    # datetime is a subclass of date, so it must be tested first.
    if isinstance(obj, datetime):
        return _marker("datetime", obj.isoformat())
    if isinstance(obj, date):
        return _marker("date", obj.isoformat())
    if isinstance(obj, time):
        return _marker("time", obj.isoformat())
    if isinstance(obj, uuid.UUID):
        return _marker("uuid", {"hex": obj.hex})
    if isinstance(obj, Decimal):
        return _marker("decimal", str(obj))
    if isinstance(obj, (bytes, bytearray)):
        try:
            return _marker("bytes", obj.decode("utf-8"))
        except UnicodeDecodeError:
            return _marker("base64", base64.b64encode(obj).decode("ascii"))
    raise EncodeError(
        f"Object of type {type(obj).__qualname__} is not JSON serializable "
        "(kombu's JSON carries datetime, date, time, UUID, Decimal and bytes besides JSON types)"
    )


def _decode_datetime(value: str) -> datetime:
    # Python 3.10's fromisoformat rejects a trailing "Z", which non-Python producers write.
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    return datetime.fromisoformat(value)


def _decode_uuid(value: Any) -> uuid.UUID:
    # kombu writes {"hex": ...}; a plain string is what pre-5.3 kombu wrote, accept it too.
    return uuid.UUID(hex=value["hex"]) if isinstance(value, dict) else uuid.UUID(value)


def _decode_bytes(value: str) -> bytes:
    return value.encode("utf-8")


_DECODERS: dict[str, Callable[[Any], Any]] = {
    "datetime": _decode_datetime,
    "date": date.fromisoformat,
    "time": time.fromisoformat,
    "uuid": _decode_uuid,
    "decimal": Decimal,
    "bytes": _decode_bytes,
    "base64": base64.b64decode,
}


def _object_hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 2 and "__type__" in obj and "__value__" in obj:
        kind = obj["__type__"]
        decoder = _DECODERS.get(kind) if isinstance(kind, str) else None
        if decoder is None:
            raise DecodeError(f"Unknown JSON type marker {kind!r}")
        return decoder(obj["__value__"])
    return obj


#: One encoder for every call: ``json.dumps(default=...)`` would build a new one each time.
_ENCODER = json.JSONEncoder(default=_json_default)
_C_ENCODER: Callable[..., Any] | None = getattr(json.encoder, "c_make_encoder", None)


class _Encoders(threading.local):
    """Each thread's C encoder, made with ``_ENCODER``'s settings once: its ``encode`` makes
    one per call, half the cost of a task body. ``markers`` (the containers being encoded,
    for the circular-reference check) is the thread's own, emptied after a failure."""

    def __init__(self, make: Callable[..., Any]) -> None:
        self.markers: dict[int, Any] = {}
        self.encode = make(
            self.markers, _json_default, json.encoder.encode_basestring_ascii, None,
            _ENCODER.key_separator, _ENCODER.item_separator, False, False, True,
        )  # fmt: skip


_encoders = _Encoders(_C_ENCODER) if _C_ENCODER is not None else None


def json_dumps(obj: Any) -> bytes:
    """Encode ``obj`` as UTF-8 JSON the way kombu does (markers, default separators, ASCII)."""
    # Not orjson: it writes UUIDs and datetimes natively as strings, not as kombu markers.
    encoders = _encoders
    try:
        if encoders is None or encoders.markers:  # no C encoder, or called from within one
            return _ENCODER.encode(obj).encode("utf-8")
        return "".join(encoders.encode(obj, 0)).encode("utf-8")
    except _OURS:
        if encoders is not None:
            encoders.markers.clear()
        raise
    except Exception as exc:
        if encoders is not None:
            encoders.markers.clear()
        raise EncodeError(f"Cannot encode {type(obj).__qualname__} as JSON: {exc}") from exc


def json_dumps_compact(obj: Any) -> bytes:
    """Like ``json_dumps``, six times faster (orjson), for broker envelopes, whose fields
    are JSON's own types: no spaces, UTF-8 unescaped; a ``UUID`` object travels as its
    string and NaN as null (no kombu marker for those two). Every JSON reader, kombu's
    included, reads it back the same."""
    try:
        return orjson.dumps(obj, default=_json_default, option=orjson.OPT_PASSTHROUGH_DATETIME)
    except orjson.JSONEncodeError as exc:
        cause = exc.__cause__
        if isinstance(cause, _OURS):
            raise cause from None
        raise EncodeError(f"Cannot encode {type(obj).__qualname__} as JSON: {exc}") from exc


def json_loads(data: bytes | str) -> Any:
    """Decode JSON, turning kombu's ``{"__type__", "__value__"}`` objects into native values."""
    try:
        plain = b'"__type__"' not in data if isinstance(data, bytes) else '"__type__"' not in data
        if plain:
            try:
                return orjson.loads(data)
            except orjson.JSONDecodeError:
                pass  # NaN, Infinity or ints beyond 64 bits: valid for Python's json below
        return json.loads(data, object_hook=_object_hook)
    except _OURS:
        raise
    except Exception as exc:
        raise DecodeError(f"Invalid JSON payload: {exc}") from exc


# --- Serializer registry (docs/celery-wire.md §2.1) -----------------------------------------------

# Celery writes protocol 4 (the capture starts 0x80 0x04); any Python 3 reader can load it.
_PICKLE_PROTOCOL = 4


def _pickle_dumps(obj: Any) -> bytes:
    return pickle.dumps(obj, protocol=_PICKLE_PROTOCOL)


def _msgpack() -> ModuleType:
    return _optional("msgpack", '"caraway[msgpack]"')


def _yaml() -> ModuleType:
    return _optional("yaml", '"caraway[yaml]"')


class _Codec(NamedTuple):
    name: str
    content_type: str
    content_encoding: str
    encode: Callable[[Any], bytes]
    decode: Callable[[Any], Any]


_CODECS = (
    _Codec("json", "application/json", "utf-8", json_dumps, json_loads),
    _Codec("pickle", "application/x-python-serialize", "binary", _pickle_dumps, pickle.loads),
    _Codec(
        "msgpack",
        "application/x-msgpack",
        "binary",
        lambda obj: _msgpack().packb(obj, use_bin_type=True),
        lambda data: _msgpack().unpackb(data, raw=False),
    ),
    _Codec(
        "yaml",
        "application/x-yaml",
        "utf-8",
        lambda obj: _yaml().safe_dump(obj).encode("utf-8"),
        lambda data: _yaml().safe_load(data),
    ),
)
_BY_KEY = {key: c for c in _CODECS for key in (c.name, c.content_type)}
#: Content types ``loads`` refuses whatever ``accept`` says (``disable_insecure_serializers``).
_DISABLED: set[str] = set()
# Text payloads in these encodings go to the decoders as bytes; json and yaml read UTF-8 bytes.
_NO_TRANSCODE = frozenset({"utf-8", "utf8", "binary", "ascii-8bit", "ascii", "us-ascii"})


def register(
    name: str,
    encoder: Callable[[Any], bytes | str],
    decoder: Callable[[Any], Any],
    content_type: str,
    content_encoding: str = "utf-8",
) -> None:
    """Add (or replace) a serializer for every app in the process, as kombu's ``register``.

    ``encoder`` returns bytes or text (text is sent as UTF-8); ``decoder`` receives the payload
    as bytes. Then ``task_serializer = name`` sends with it and ``accept_content`` may name it.
    """
    if not name or "/" in name:
        raise ImproperlyConfigured(f"a serializer needs a plain name, not {name!r}")
    if "/" not in content_type:
        raise ImproperlyConfigured(f"{content_type!r} is not a mime type (e.g. 'application/x-me')")
    unregister(name)

    def encode(obj: Any) -> bytes:
        payload = encoder(obj)
        return payload.encode("utf-8") if isinstance(payload, str) else payload

    codec = _Codec(name, content_type.lower(), content_encoding, encode, decoder)
    _BY_KEY[name] = _BY_KEY[codec.content_type] = codec
    _DISABLED.discard(codec.content_type)  # registering it is asking for it


def unregister(name: str) -> None:
    """Remove a serializer added by name (built-in names included, as with kombu)."""
    codec = _BY_KEY.pop(name, None)
    if codec is not None and _BY_KEY.get(codec.content_type) is codec:
        del _BY_KEY[codec.content_type]


def disable_insecure_serializers(allowed: Iterable[str] | None = ("json",)) -> None:
    """Refuse to decode every registered content type except ``allowed`` (names or mime types).

    Process-wide, as kombu's function of the same name: a worker that must only ever read
    signed messages turns the others off here, whatever a later ``accept_content`` says.
    """
    kept = normalize_accept(tuple(allowed or ()))
    _DISABLED.clear()
    _DISABLED.update(c.content_type for c in _BY_KEY.values() if c.content_type not in kept)


def _find_codec(serializer: str) -> _Codec | None:
    codec = _BY_KEY.get(serializer)
    if codec is None:  # "JSON", " application/json; charset=utf-8"
        codec = _BY_KEY.get(serializer.split(";", 1)[0].strip().lower())
    return codec


def _codec(serializer: str) -> _Codec:
    codec = _find_codec(serializer)
    if codec is None:
        names = {c.name for c in _BY_KEY.values()}
        raise _unknown("serializer", serializer, names, _BY_KEY)
    return codec


def content_type_for(serializer: str) -> str:
    """The mime type of a serializer given by name (``"json"``) or mime type."""
    return _codec(serializer).content_type


def normalize_accept(accept: Collection[str]) -> frozenset[str]:
    """Names or mime types -> mime types. Unknown mime types pass through, as in kombu."""
    if isinstance(accept, str):  # accept_content="json" would otherwise be read letter by letter
        accept = (accept,)
    return frozenset(item.lower() if "/" in item else content_type_for(item) for item in accept)


def dumps(obj: Any, serializer: str = "json") -> tuple[str, str, bytes]:
    """Serialize ``obj`` -> ``(content_type, content_encoding, payload)``."""
    codec = _codec(serializer)
    try:
        payload = codec.encode(obj)
    except _OURS:
        raise
    except Exception as exc:
        raise EncodeError(
            f"Cannot encode {type(obj).__qualname__} with {codec.name}: {exc}"
        ) from exc
    return codec.content_type, codec.content_encoding, payload


def loads(
    data: bytes | str,
    content_type: str,
    content_encoding: str = "utf-8",
    accept: Collection[str] | None = None,
) -> Any:
    """Deserialize a payload; ``accept`` (names or mime types) limits the content types allowed.

    ``accept=None`` allows every registered serializer, pickle included: callers pass their
    ``accept_content`` setting.
    """
    if not content_type:
        raise DecodeError("The payload has no content type")
    codec = _find_codec(content_type)
    mime = codec.content_type if codec else content_type
    if accept is not None and mime not in accept and mime not in normalize_accept(accept):
        name = codec.name if codec else mime
        raise ContentDisallowed(
            f"Refusing to decode content of type {mime!r}: it is not in the accepted content "
            f"types {sorted(normalize_accept(accept))}. If the sender is trusted, add {name!r} "
            "to the accept_content setting (result_accept_content for results)."
        )
    if codec is None:
        raise DecodeError(f"No decoder for content type {content_type!r}")
    if mime in _DISABLED:
        raise ContentDisallowed(
            f"Refusing to decode content of type {mime!r}: disable_insecure_serializers() "
            "(or setup_security()) turned it off in this process"
        )
    try:
        if codec.content_encoding == "binary":
            if isinstance(data, str):
                data = data.encode("utf-8")  # what kombu does with text given to a binary codec
        elif (
            isinstance(data, bytes)
            and content_encoding not in _NO_TRANSCODE
            and content_encoding.lower() not in _NO_TRANSCODE
        ):
            data = data.decode(content_encoding)
        return codec.decode(data)
    except _OURS:
        raise
    except Exception as exc:
        raise DecodeError(f"Cannot decode {mime} payload: {exc}") from exc


# --- Compression (docs/celery-wire.md §2.3) -------------------------------------------------------

#: Output produced per decompression step; a size limit is checked after each step, so a
#: refused body never holds more than the limit plus one step in memory.
DECOMPRESS_STEP = 1 << 20

Chunks = Iterator[bytes]


def _zlib_chunks(data: bytes) -> Chunks:
    # wbits 32+15 reads kombu's zlib stream and also a true gzip stream from other producers.
    stream = zlib.decompressobj(32 + zlib.MAX_WBITS)
    while data and not stream.eof:
        yield stream.decompress(data, DECOMPRESS_STEP)
        data = stream.unconsumed_tail
    yield stream.flush()  # input all consumed: at most the last few bytes of a copy
    if not stream.eof:
        raise zlib.error("incomplete or truncated stream")


def _multistream_chunks(new: Callable[[], Any], data: bytes) -> Chunks:
    """bz2 and lzma: one or more concatenated streams, as their ``decompress`` reads them."""
    while True:
        stream = new()
        yield stream.decompress(data, DECOMPRESS_STEP)
        while not stream.eof and not stream.needs_input:
            yield stream.decompress(b"", DECOMPRESS_STEP)
        if not stream.eof:
            raise EOFError("compressed data ended before the end-of-stream marker")
        data = stream.unused_data
        if not data:
            return


def _bz2_chunks(data: bytes) -> Chunks:
    return _multistream_chunks(bz2.BZ2Decompressor, data)


def _lzma_chunks(data: bytes) -> Chunks:
    return _multistream_chunks(lzma.LZMADecompressor, data)


def _zstd() -> ModuleType:
    return _optional("zstandard", '"caraway[zstd]"')


def _zstd_chunks(data: bytes) -> Chunks:
    # A stream reader also reads frames written without a content size (streaming producers).
    reader = _zstd().ZstdDecompressor().stream_reader(data)
    while chunk := reader.read(DECOMPRESS_STEP):
        yield chunk


def _brotli() -> ModuleType:
    return _optional("brotli", '"caraway[brotli]"')


def _brotli_chunks(data: bytes) -> Chunks:
    # The output limit is soft (the buffer stops growing past it): a step may be up to ~2x.
    stream = _brotli().Decompressor()
    chunk = stream.process(data, output_buffer_limit=DECOMPRESS_STEP)
    while chunk:
        yield chunk
        if stream.is_finished():
            return
        chunk = stream.process(b"", output_buffer_limit=DECOMPRESS_STEP)
    if not stream.is_finished():
        raise EOFError("compressed data ended before the end of the brotli stream")


class _Compressor(NamedTuple):
    mime: str
    compress: Callable[[bytes], bytes]
    chunks: Callable[[bytes], Chunks]  # the decompressed output, step by step


_ZLIB = _Compressor("application/x-gzip", zlib.compress, _zlib_chunks)
_BZ2 = _Compressor("application/x-bz2", bz2.compress, _bz2_chunks)
_LZMA = _Compressor("application/x-lzma", lzma.compress, _lzma_chunks)
_ZSTD = _Compressor(
    "application/zstd", lambda data: _zstd().ZstdCompressor().compress(data), _zstd_chunks
)
_BROTLI = _Compressor("application/x-brotli", lambda data: _brotli().compress(data), _brotli_chunks)
_COMPRESSION_NAMES = {
    "zlib": _ZLIB,
    "gzip": _ZLIB,
    "bzip2": _BZ2,
    "bzip": _BZ2,
    "lzma": _LZMA,
    "xz": _LZMA,
    "zstd": _ZSTD,
    "zstandard": _ZSTD,
    "brotli": _BROTLI,
}
_COMPRESSORS = {**_COMPRESSION_NAMES, **{c.mime: c for c in _COMPRESSION_NAMES.values()}}


def _compressor(method: str) -> _Compressor:
    found = _COMPRESSORS.get(method) or _COMPRESSORS.get(method.strip().lower())
    if found is None:
        mimes = {c.mime for c in _COMPRESSION_NAMES.values()}
        raise _unknown("compression", method, _COMPRESSION_NAMES, mimes)
    return found


def compress(data: bytes, method: str) -> tuple[bytes, str]:
    """Compress with a method name or mime -> ``(compressed, mime for the compression header)``."""
    compressor = _compressor(method)
    try:
        return compressor.compress(data), compressor.mime
    except _OURS:
        raise
    except Exception as exc:
        raise EncodeError(f"Cannot compress with {compressor.mime}: {exc}") from exc


def decompress(data: bytes, mime_or_name: str, limit: int | None = None) -> bytes:
    """Undo :func:`compress`; ``mime_or_name`` is usually the message's compression header.

    ``limit``: the most bytes the output may have, checked as it is produced (a 300 KiB
    body can expand to gigabytes); past it, ``BodyTooLarge``.
    """
    compressor = _compressor(mime_or_name)
    parts: list[bytes] = []
    size = 0
    try:
        for part in compressor.chunks(data):
            size += len(part)
            if limit is not None and size > limit:
                raise BodyTooLarge(limit, compressor.mime)
            parts.append(part)
    except _OURS:
        raise
    except Exception as exc:
        raise DecodeError(f"Cannot decompress {compressor.mime} payload: {exc}") from exc
    return b"".join(parts)
