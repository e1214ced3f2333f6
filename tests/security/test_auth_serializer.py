"""The ``auth`` serializer: signed bodies verify, anything altered or unknown is refused, and
the setup refuses configurations that would still run unsigned messages."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from signing_support import write_identity

from caraway import Caraway, serialization
from caraway.exceptions import ContentDisallowed, ImproperlyConfigured, SecurityError
from caraway.security.auth import AuthSerializer
from caraway.security.keys import Certificate, CertStore, PrivateKey


@pytest.fixture(autouse=True)
def _restore_registry() -> Iterator[None]:
    """setup_security() changes the process-wide serializer registry: put it back."""
    saved, disabled = dict(serialization._BY_KEY), set(serialization._DISABLED)
    yield
    serialization._BY_KEY.clear()
    serialization._BY_KEY.update(saved)
    serialization._DISABLED.clear()
    serialization._DISABLED.update(disabled)


@pytest.fixture(scope="module")
def ssl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ssl")
    write_identity(folder / "store", "worker", serial=1001)
    write_identity(folder / "other", "stranger", serial=2002)
    return folder


def _serializer(ssl_dir: Path, signer: str = "worker") -> AuthSerializer:
    place = ssl_dir / ("store" if signer == "worker" else "other")
    return AuthSerializer(
        PrivateKey((place / f"{signer}.key").read_bytes()),
        Certificate((place / f"{signer}.pem").read_bytes()),
        CertStore.from_path(str(ssl_dir / "store" / "*.pem")),
    )


def test_a_signed_body_round_trips_and_names_its_signer(ssl_dir: Path) -> None:
    auth = _serializer(ssl_dir)
    payload = auth.encode([[2, 3], {"x": "é"}, {"callbacks": None}])
    fields = base64.b64decode(payload).split(b"\x00\x01", 4)
    assert base64.b64decode(fields[0]).decode() == "NL worker 1001"
    assert fields[2:4] == [b"application/json", b"utf-8"]
    assert auth.decode(payload) == [[2, 3], {"x": "é"}, {"callbacks": None}]


def test_an_altered_body_is_refused(ssl_dir: Path) -> None:
    auth = _serializer(ssl_dir)
    fields = base64.b64decode(auth.encode({"amount": 10})).split(b"\x00\x01", 4)
    fields[4] = fields[4].replace(b"10", b"99")
    with pytest.raises(SecurityError, match="bad signature"):
        auth.decode(base64.b64encode(b"\x00\x01".join(fields)))


def test_a_signer_outside_the_store_is_refused(ssl_dir: Path) -> None:
    stranger = _serializer(ssl_dir, signer="stranger")
    with pytest.raises(SecurityError, match="no trusted certificate"):
        _serializer(ssl_dir).decode(stranger.encode({"a": 1}))


def test_garbage_is_refused_as_unsigned(ssl_dir: Path) -> None:
    with pytest.raises(SecurityError, match="not a signed message"):
        _serializer(ssl_dir).decode(b"eyJhIjogMX0=")


def test_an_expired_certificate_in_the_store_is_refused(tmp_path: Path) -> None:
    write_identity(tmp_path, "old", serial=7, days=-1)
    with pytest.raises(SecurityError, match="expired"):
        CertStore.from_path(str(tmp_path / "*.pem"))


def _app(ssl_dir: Path, **conf: object) -> Caraway:
    app = Caraway("signed", broker="memory://signed", set_as_current=False)
    settings: dict[str, object] = {
        "security_key": str(ssl_dir / "store" / "worker.key"),
        "security_certificate": str(ssl_dir / "store" / "worker.pem"),
        "security_cert_store": str(ssl_dir / "store" / "*.pem"),
        "task_serializer": "auth",
        "accept_content": ["auth"],
        "result_accept_content": ["json"],
    }
    app.conf.update({**settings, **conf})
    return app


def test_setup_registers_auth_and_turns_off_unsigned_content(ssl_dir: Path) -> None:
    _app(ssl_dir).setup_security()
    content_type, encoding, payload = serialization.dumps({"n": 1}, "auth")
    assert (content_type, encoding) == ("application/data", "utf-8")
    assert serialization.loads(payload, content_type, encoding, accept=["auth"]) == {"n": 1}
    pickled = serialization.dumps({"n": 1}, "pickle")
    with pytest.raises(ContentDisallowed, match="turned it off"):
        serialization.loads(pickled[2], pickled[0], pickled[1])
    assert serialization.loads(b'{"n": 1}', "application/json") == {"n": 1}


@pytest.mark.parametrize(
    ("conf", "error"),
    [
        ({"task_serializer": "json"}, "task_serializer = 'auth'"),
        ({"accept_content": ["auth", "json"]}, "accept_content = \\['auth'\\]"),
        ({"security_key": None}, "security_key, security_certificate"),
        ({"security_cert_store": "/nowhere/*.pem"}, "holds no certificate"),
        ({"security_key": "/nowhere.key"}, "security_key '/nowhere.key' cannot be read"),
        ({"security_digest": "sha999"}, "not a hash"),
    ],
)
def test_setup_refuses_what_would_not_be_safe_or_cannot_work(
    ssl_dir: Path, conf: dict[str, object], error: str
) -> None:
    with pytest.raises(ImproperlyConfigured, match=error):
        _app(ssl_dir, **conf).setup_security()
