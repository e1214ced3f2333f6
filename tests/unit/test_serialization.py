"""Serialization against the wire: kombu's JSON markers, other serializers, compression.

Golden vectors come from real Celery 5.7 / kombu 5.7 traffic (tests/data/celery-captures).
"""

from __future__ import annotations

import base64
import json
import pickle
import sys
import threading
import zlib
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from caraway.exceptions import (
    BodyTooLarge,
    ContentDisallowed,
    DecodeError,
    EncodeError,
    ImproperlyConfigured,
    MissingExtra,
)
from caraway.serialization import (
    DECOMPRESS_STEP,
    compress,
    content_type_for,
    decompress,
    dumps,
    json_dumps,
    json_loads,
    loads,
    normalize_accept,
    register,
    unregister,
)

EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
TYPED_RESULT = {
    "dt": datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=timezone.utc),
    "d": date(2024, 5, 6),
    "t": time(7, 8, 9),
    "u": UUID("12345678123456781234567812345678"),
    "dec": Decimal("3.14"),
    "b": b"hello",
    "b64": b"\xff\x00\x01",
}
PICKLE = "application/x-python-serialize"


def _load_json(captures_dir: Path, name: str) -> Any:
    return json.loads((captures_dir / name).read_text())


def _captured_message(captures_dir: Path, entry: str) -> dict[str, Any]:
    """The one message a capture entry left in its queue list."""
    keys = _load_json(captures_dir, "redis_messages.json")[entry]["keys"]
    messages = [m for key in keys.values() for m in key.get("messages", [])]
    assert len(messages) == 1, f"{entry}: expected one message, found {len(messages)}"
    message: dict[str, Any] = messages[0]
    return message


def _body(message: dict[str, Any]) -> bytes:
    assert message["properties"]["body_encoding"] == "base64"
    return base64.b64decode(message["body"])


# --- JSON markers -------------------------------------------------------------------------------


def test_celery_result_with_markers_decodes_to_native_values(captures_dir: Path) -> None:
    raw = _load_json(captures_dir, "types_roundtrip.json")["echo_typed_raw_result"]

    meta = json_loads(raw.encode())

    assert meta["result"] == TYPED_RESULT
    assert meta["result"]["dt"].utcoffset() == timedelta(0)
    assert meta["status"] == "SUCCESS"


def test_celery_result_with_markers_reencodes_byte_for_byte(captures_dir: Path) -> None:
    raw = _load_json(captures_dir, "types_roundtrip.json")["echo_typed_raw_result"]
    result_json = json.dumps(json.loads(raw)["result"])

    assert json_dumps(TYPED_RESULT).decode() == result_json
    assert result_json in raw
    assert json_dumps(json_loads(raw)) == raw.encode()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=timezone.utc),
            '{"__type__": "datetime", "__value__": "2024-05-06T07:08:09.123456+00:00"}',
        ),
        (
            datetime(2024, 5, 6, 7, 8, 9),
            '{"__type__": "datetime", "__value__": "2024-05-06T07:08:09"}',
        ),
        (
            datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone(timedelta(hours=2))),
            '{"__type__": "datetime", "__value__": "2024-05-06T07:08:09+02:00"}',
        ),
        (date(2024, 5, 6), '{"__type__": "date", "__value__": "2024-05-06"}'),
        (time(7, 8, 9), '{"__type__": "time", "__value__": "07:08:09"}'),
        (
            UUID("12345678123456781234567812345678"),
            '{"__type__": "uuid", "__value__": {"hex": "12345678123456781234567812345678"}}',
        ),
        (Decimal("3.14"), '{"__type__": "decimal", "__value__": "3.14"}'),
        (b"hello", '{"__type__": "bytes", "__value__": "hello"}'),
        (b"\xff\x00\x01", '{"__type__": "base64", "__value__": "/wAB"}'),
    ],
)
def test_marker_types_encode_as_kombu_and_round_trip(value: Any, expected: str) -> None:
    encoded = json_dumps(value)

    assert encoded == expected.encode()
    decoded = json_loads(encoded)
    assert decoded == value
    assert type(decoded) is type(value)


def test_tuples_become_lists_and_non_ascii_is_escaped() -> None:
    assert json_dumps({"t": (1, 2), "s": "é"}) == b'{"t": [1, 2], "s": "\\u00e9"}'
    assert json_loads(b'{"t": [1, 2], "s": "\\u00e9"}') == {"t": [1, 2], "s": "é"}


def test_markers_nested_inside_lists_and_dicts_decode() -> None:
    value = {"a": [{"when": date(2024, 1, 2)}, [Decimal("1.5")]], "n": None}

    assert json_loads(json_dumps(value)) == value


def test_only_exact_two_key_objects_are_markers() -> None:
    payload = b'{"__type__": "datetime", "__value__": "2024-05-06", "extra": 1}'

    assert json_loads(payload) == {"__type__": "datetime", "__value__": "2024-05-06", "extra": 1}
    assert json_loads(b'{"k": "__type__"}') == {"k": "__type__"}


def test_reader_accepts_zulu_datetimes_and_plain_string_uuids() -> None:
    payload = (
        b'[{"__type__": "datetime", "__value__": "2024-05-06T07:08:09Z"},'
        b' {"__type__": "uuid", "__value__": "12345678-1234-5678-1234-567812345678"}]'
    )

    assert json_loads(payload) == [
        datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc),
        UUID("12345678123456781234567812345678"),
    ]


def test_json_python_accepts_but_orjson_rejects_still_decodes() -> None:
    decoded = json_loads(b'[NaN, 18446744073709551616, "x"]')

    assert decoded[0] != decoded[0]
    assert decoded[1:] == [2**64, "x"]


@pytest.mark.parametrize("value", [{1, 2}, frozenset({1}), object(), 1j])
def test_unsupported_types_raise_encode_error_naming_the_type(value: Any) -> None:
    with pytest.raises(EncodeError, match=type(value).__qualname__):
        json_dumps({"v": value})
    with pytest.raises(EncodeError, match=type(value).__qualname__):
        dumps([value])


@pytest.mark.parametrize(
    "payload",
    [
        b"{not json",
        b"",
        b'{"__type__": "set", "__value__": [1, 2]}',
        b'{"__type__": ["datetime"], "__value__": "x"}',
        b'{"__type__": "decimal", "__value__": "three"}',
        b'{"__type__": "uuid", "__value__": {"nohex": 1}}',
        b'{"__type__": "datetime", "__value__": "yesterday"}',
        b"\xff\xfe\xfa",
    ],
)
def test_undecodable_json_raises_decode_error(payload: bytes) -> None:
    with pytest.raises(DecodeError):
        loads(payload, "application/json")


def test_decode_error_chains_the_original() -> None:
    with pytest.raises(DecodeError) as info:
        loads(b"{not json", "application/json")

    assert isinstance(info.value.__cause__, ValueError)


# --- Captured task bodies -----------------------------------------------------------------------


def test_captured_kwargs_types_body_decodes_and_reencodes(captures_dir: Path) -> None:
    message = _captured_message(captures_dir, "kwargs_types")
    value = {
        "dt": datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=timezone.utc),
        "naive_dt": datetime(2024, 5, 6, 7, 8, 9),
        "date": date(2024, 5, 6),
        "time": time(7, 8, 9),
        "uuid": UUID("12345678-1234-5678-1234-567812345678"),
        "dec": Decimal("3.14"),
        "tuple": (1, 2),
    }

    decoded = loads(_body(message), message["content-type"], message["content-encoding"])

    assert decoded == [[], {"value": {**value, "tuple": [1, 2]}}, EMBED]
    assert dumps(((), {"value": value}, EMBED)) == ("application/json", "utf-8", _body(message))


def test_captured_kwargs_bytes_body_decodes_and_reencodes(captures_dir: Path) -> None:
    message = _captured_message(captures_dir, "kwargs_bytes")
    value = {"bytes_utf8": b"hello", "bytes_bin": b"\xff\x00\x01"}

    decoded = loads(_body(message), message["content-type"], message["content-encoding"])

    assert decoded == [[], {"value": value}, EMBED]
    assert dumps(((), {"value": value}, EMBED)) == ("application/json", "utf-8", _body(message))


def test_captured_pickle_body_decodes_when_pickle_is_accepted(captures_dir: Path) -> None:
    message = _captured_message(captures_dir, "serializer_pickle")
    assert (message["content-type"], message["content-encoding"]) == (PICKLE, "binary")

    decoded = loads(_body(message), PICKLE, "binary", accept=["json", "pickle"])

    assert decoded == ((1, 2), {}, EMBED)
    assert pickle.loads(dumps(decoded, "pickle")[2]) == decoded


def test_captured_pickle_body_is_refused_with_json_only_accept(captures_dir: Path) -> None:
    message = _captured_message(captures_dir, "serializer_pickle")

    with pytest.raises(ContentDisallowed, match=r"application/x-python-serialize") as info:
        loads(_body(message), PICKLE, "binary", accept=["json"])

    assert "accept_content" in str(info.value)
    assert "result_accept_content" in str(info.value)


@pytest.mark.parametrize(
    ("entry", "serializer", "content_type", "content_encoding"),
    [
        ("serializer_msgpack", "msgpack", "application/x-msgpack", "binary"),
        ("serializer_yaml", "yaml", "application/x-yaml", "utf-8"),
    ],
)
def test_captured_optional_serializer_bodies_decode_and_reencode(
    captures_dir: Path, entry: str, serializer: str, content_type: str, content_encoding: str
) -> None:
    message = _captured_message(captures_dir, entry)
    assert (message["content-type"], message["content-encoding"]) == (
        content_type,
        content_encoding,
    )

    decoded = loads(_body(message), content_type, content_encoding, accept=[serializer])

    assert decoded == [[1, 2], {}, EMBED]
    assert dumps(((1, 2), {}, EMBED), serializer) == (
        content_type,
        content_encoding,
        _body(message),
    )


def test_captured_zlib_body_decompresses_then_decodes(captures_dir: Path) -> None:
    message = _captured_message(captures_dir, "compression_zlib")
    assert message["headers"]["compression"] == "application/x-gzip"

    raw = decompress(_body(message), message["headers"]["compression"])
    decoded = loads(raw, message["content-type"], message["content-encoding"])

    assert decoded == [[1, 2], {}, EMBED]
    assert compress(raw, "zlib")[1] == "application/x-gzip"
    assert decompress(compress(raw, "zlib")[0], "application/x-gzip") == raw


# --- loads / dumps / accept ---------------------------------------------------------------------


@pytest.mark.parametrize("serializer", ["json", "pickle", "msgpack", "yaml"])
def test_every_serializer_round_trips_a_task_body(serializer: str) -> None:
    body = [[1, "two", 3.5], {"flag": True, "none": None, "nested": {"k": ["v"]}}, EMBED]

    content_type, content_encoding, payload = dumps(body, serializer)

    assert isinstance(payload, bytes)
    assert content_type == content_type_for(serializer)
    assert list(loads(payload, content_type, content_encoding)) == body


def test_serializer_can_be_named_by_mime_and_payload_can_be_text() -> None:
    assert dumps({"a": 1}, "application/json") == ("application/json", "utf-8", b'{"a": 1}')
    assert loads('{"a": 1}', "application/json") == {"a": 1}
    assert loads(b'{"a": 1}', "Application/JSON; charset=utf-8") == {"a": 1}


def test_non_utf8_content_encoding_is_honoured() -> None:
    assert loads('["é"]'.encode("latin-1"), "application/json", "latin-1") == ["é"]


def test_accept_takes_names_or_mimes() -> None:
    payload = dumps([1], "yaml")[2]

    assert loads(payload, "application/x-yaml", accept=["application/x-yaml"]) == [1]
    assert loads(payload, "application/x-yaml", accept=frozenset({"yaml"})) == [1]
    assert loads(payload, "application/x-yaml", accept="yaml") == [1]
    with pytest.raises(ContentDisallowed, match=r"application/x-yaml"):
        loads(payload, "application/x-yaml", accept=["application/json"])


def test_unknown_content_type_is_refused_or_undecodable() -> None:
    with pytest.raises(ContentDisallowed, match=r"text/plain"):
        loads(b"hi", "text/plain", accept=["json"])
    with pytest.raises(DecodeError, match=r"text/plain"):
        loads(b"hi", "text/plain")
    with pytest.raises(DecodeError):
        loads(b"[]", "")


@pytest.mark.parametrize(
    ("payload", "content_type"),
    [
        (b"not a pickle", PICKLE),
        (b"\xc1", "application/x-msgpack"),
        (b"a: [b", "application/x-yaml"),
        (b"!!python/object:os.system {}", "application/x-yaml"),
    ],
)
def test_undecodable_payloads_raise_decode_error(payload: bytes, content_type: str) -> None:
    with pytest.raises(DecodeError) as info:
        loads(payload, content_type)

    assert info.value.__cause__ is not None


@pytest.mark.parametrize(
    ("value", "serializer"),
    [(lambda: None, "pickle"), (datetime(2024, 1, 1), "msgpack"), (object(), "yaml")],
)
def test_unencodable_values_raise_encode_error(value: Any, serializer: str) -> None:
    with pytest.raises(EncodeError) as info:
        dumps(value, serializer)

    assert info.value.__cause__ is not None


def test_normalize_accept_maps_names_to_mimes() -> None:
    accepted = normalize_accept(["json", "Pickle", "application/x-yaml", "application/x-custom"])

    assert accepted == frozenset(
        {"application/json", PICKLE, "application/x-yaml", "application/x-custom"}
    )
    assert normalize_accept("msgpack") == frozenset({"application/x-msgpack"})


def test_unknown_serializer_names_the_valid_ones_and_suggests() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"Did you mean 'json'\?") as info:
        content_type_for("jsno")

    assert "json, msgpack, pickle, yaml" in str(info.value)
    with pytest.raises(ImproperlyConfigured, match=r"Did you mean 'pickle'\?"):
        normalize_accept(["json", "pikle"])
    with pytest.raises(ImproperlyConfigured, match=r"Unknown serializer 'bson'"):
        dumps(1, "bson")


@pytest.mark.parametrize(
    ("serializer", "module", "extra"),
    [("msgpack", "msgpack", "msgpack"), ("yaml", "yaml", "yaml")],
)
def test_missing_optional_serializer_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, serializer: str, module: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    expected = f'pip install "caraway[{extra}]"'

    with pytest.raises(MissingExtra, match=expected.replace("[", r"\[").replace("]", r"\]")):
        dumps([1], serializer)
    with pytest.raises(MissingExtra):
        loads(b"\x91\x01", content_type_for(serializer))


# --- Compression --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "mime"),
    [
        ("zlib", "application/x-gzip"),
        ("gzip", "application/x-gzip"),
        ("bzip2", "application/x-bz2"),
        ("bzip", "application/x-bz2"),
        ("lzma", "application/x-lzma"),
        ("xz", "application/x-lzma"),
        ("zstd", "application/zstd"),
        ("zstandard", "application/zstd"),
        ("brotli", "application/x-brotli"),
    ],
)
def test_every_compression_round_trips_by_name_and_by_mime(method: str, mime: str) -> None:
    data = json_dumps([[1, 2], {"text": "x" * 500}, EMBED])

    compressed, header = compress(data, method)

    assert header == mime
    assert compressed != data
    assert decompress(compressed, header) == data
    assert decompress(compressed, method) == data


def test_gzip_is_kombus_zlib_stream_and_real_gzip_also_reads() -> None:
    import gzip

    compressed, _ = compress(b"payload", "gzip")

    assert zlib.decompress(compressed) == b"payload"
    assert decompress(gzip.compress(b"payload"), "application/x-gzip") == b"payload"


@pytest.mark.parametrize("mime", ["application/x-gzip", "application/x-bz2", "application/zstd"])
def test_corrupt_compressed_payload_raises_decode_error(mime: str) -> None:
    with pytest.raises(DecodeError, match=mime) as info:
        decompress(b"definitely not compressed", mime)

    assert info.value.__cause__ is not None


def test_unknown_compression_names_the_valid_ones_and_suggests() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"Did you mean 'gzip'\?") as info:
        compress(b"x", "gzp")

    assert "brotli, bzip, bzip2, gzip, lzma, xz, zlib, zstandard, zstd" in str(info.value)
    with pytest.raises(ImproperlyConfigured, match=r"Unknown compression 'application/x-snappy'"):
        decompress(b"x", "application/x-snappy")


@pytest.mark.parametrize(
    ("method", "module", "install"),
    [("zstd", "zstandard", 'pip install "caraway[zstd]"'), ("brotli", "brotli", "pip install")],
)
def test_missing_optional_compression_names_the_install(
    monkeypatch: pytest.MonkeyPatch, method: str, module: str, install: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)

    with pytest.raises(MissingExtra) as info:
        compress(b"x", method)

    assert install in str(info.value)
    with pytest.raises(MissingExtra):
        decompress(b"x", method)


#: Every compression by name: the size limit holds for each.
METHODS = ["gzip", "bzip2", "lzma", "zstd", "brotli"]


@pytest.mark.parametrize("method", METHODS)
def test_a_body_that_expands_past_the_limit_is_refused_while_streaming(method: str) -> None:
    bomb, header = compress(b"\0" * (8 << 20), method)  # 8 MiB of zeros in a few KiB
    assert len(bomb) < 64 << 10
    limit = DECOMPRESS_STEP + 1  # refused on the second step

    with pytest.raises(BodyTooLarge) as info:
        decompress(bomb, header, limit=limit)

    assert str(info.value) == (
        f"body larger than {limit} bytes after decompression ({header}); "
        "raise worker_max_decompressed_size to accept it"
    )
    assert str(pickle.loads(pickle.dumps(info.value))) == str(info.value)


@pytest.mark.parametrize("method", METHODS)
def test_a_body_at_the_limit_and_several_streams_still_decompress(method: str) -> None:
    data = bytes(range(256)) * (3 * DECOMPRESS_STEP // 256)  # three decompression steps
    compressed, header = compress(data, method)

    assert decompress(compressed, header, limit=len(data)) == data
    if method in ("bzip2", "lzma"):  # concatenated streams, as their decompress reads them
        assert decompress(compressed + compressed, header) == data + data


# Not zstd: its reader cannot tell a cut frame from a whole one (the payload's decoder will).
@pytest.mark.parametrize("method", ["gzip", "bzip2", "lzma", "brotli"])
def test_a_truncated_body_is_a_decode_error(method: str) -> None:
    compressed, header = compress(b"payload " * 1000, method)

    with pytest.raises(DecodeError):
        decompress(compressed[: len(compressed) // 2], header)


def test_a_registered_serializer_sends_and_is_accepted_by_name() -> None:
    register(
        "reversed", lambda obj: json.dumps(obj)[::-1], lambda data: json.loads(data[::-1]),
        content_type="application/x-reversed",
    )  # fmt: skip
    try:
        content_type, encoding, payload = dumps({"a": [1, 2]}, "reversed")
        assert (content_type, encoding, payload) == ("application/x-reversed", "utf-8",
                                                     b'}]2 ,1[ :"a"{')  # fmt: skip
        assert loads(payload, content_type, encoding, accept=["reversed"]) == {"a": [1, 2]}
        with pytest.raises(ContentDisallowed):
            loads(payload, content_type, encoding, accept=["json"])
    finally:
        unregister("reversed")
    with pytest.raises(ImproperlyConfigured, match="Unknown serializer 'reversed'"):
        dumps({}, "reversed")


def test_json_after_a_failed_encode_and_from_other_threads_matches_the_stdlib() -> None:
    """``json_dumps`` keeps a C encoder per thread: a failure midway through a container
    must not leave that container marked as being encoded (a false "circular reference")."""
    value: dict[str, Any] = {"k": [1, 2], "bad": object()}
    with pytest.raises(EncodeError):
        json_dumps(value)
    del value["bad"]
    value["t"] = (1.5, float("nan"), "é")
    expected = json.dumps(value).encode()
    results: list[bytes] = []
    threads = [threading.Thread(target=lambda: results.append(json_dumps(value))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [json_dumps(value), *results] == [expected] * 5
