"""``app.setup_security()``: check the settings, read the key files, register ``auth``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from caraway import serialization
from caraway.current import get_current_app
from caraway.exceptions import ImproperlyConfigured
from caraway.security.auth import NAME, AuthSerializer
from caraway.security.keys import Certificate, CertStore, PrivateKey

if TYPE_CHECKING:
    from caraway.app import Caraway

_NEEDS_AUTH = (
    "message signing needs task_serializer = 'auth' and accept_content = ['auth'] (a worker "
    "that also accepted unsigned content would run unsigned messages); got task_serializer="
    "{serializer!r}, accept_content={accept!r}"
)
_NEEDS_FILES = (
    "message signing needs security_key, security_certificate and security_cert_store "
    "(files of the signing key, its certificate, and the trusted certificates)"
)


def setup_security(
    allowed_serializers: Iterable[str] | None = None,
    key: str | None = None,
    key_password: bytes | str | None = None,
    cert: str | None = None,
    store: str | None = None,
    digest: str | None = None,
    serializer: str = "json",
    app: Caraway | None = None,
) -> None:
    """Register the signing serializer for this process from ``app``'s settings (the current
    app when None); arguments given here win over the settings. Celery's signature."""
    conf = (app or get_current_app()).conf
    accept = list(conf.accept_content)
    if conf.task_serializer != NAME or accept != [NAME]:
        raise ImproperlyConfigured(
            _NEEDS_AUTH.format(serializer=conf.task_serializer, accept=accept)
        )
    key = key or conf.security_key
    cert = cert or conf.security_certificate
    store = store or conf.security_cert_store
    if not (key and cert and store):
        raise ImproperlyConfigured(_NEEDS_FILES)
    signer = AuthSerializer(
        PrivateKey(_read(key, "security_key"), key_password or conf.security_key_password),
        Certificate(_read(cert, "security_certificate")),
        CertStore.from_path(store),
        digest or conf.security_digest,
        serializer,
    )
    disable_untrusted_serializers(allowed_serializers)
    signer.register()


def disable_untrusted_serializers(allowed: Iterable[str] | None = None) -> None:
    """Decode only ``allowed`` (JSON when None, so results stay readable) and ``auth``."""
    kept = list(allowed) if allowed is not None else ["json"]
    serialization.disable_insecure_serializers(kept)


def _read(path: str, setting: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise ImproperlyConfigured(f"{setting} {path!r} cannot be read: {exc}") from exc
