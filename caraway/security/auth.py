"""The ``auth`` serializer's wire form, the same bytes Celery reads and writes.

The inner payload is serialized first (JSON by default) and that byte string is signed, so a
receiver checks the signature before decoding anything. On the wire: base64 of the five
fields ``base64(signer id)``, ``base64(signature)``, inner content type, inner content
encoding and the inner payload, joined by ``\\x00\\x01``; the message's content type is
``application/data`` in ``utf-8``.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from caraway import serialization
from caraway.exceptions import SecurityError
from caraway.security.keys import Certificate, CertStore, PrivateKey, digest_named

NAME = "auth"
CONTENT_TYPE = "application/data"
CONTENT_ENCODING = "utf-8"
_SEPARATOR = b"\x00\x01"


class AuthSerializer:
    """Signs with one key and certificate; verifies against a store of trusted certificates."""

    def __init__(
        self,
        key: PrivateKey | None,
        cert: Certificate | None,
        store: CertStore | None,
        digest: str = "sha256",
        inner: str = "json",
    ) -> None:
        self.key, self.cert, self.store = key, cert, store
        self.digest = digest_named(digest)
        self.inner = inner

    def encode(self, obj: Any) -> bytes:
        if self.key is None or self.cert is None:
            raise SecurityError("this process has no key and certificate to sign with")
        content_type, content_encoding, body = serialization.dumps(obj, self.inner)
        fields = [
            base64.b64encode(self.cert.id.encode()),
            base64.b64encode(self.key.sign(body, self.digest)),
            content_type.encode(),
            content_encoding.encode(),
            body,
        ]
        return base64.b64encode(_SEPARATOR.join(fields))

    def decode(self, payload: bytes | str) -> Any:
        if self.store is None:
            raise SecurityError("this process has no certificate store to verify with")
        raw = payload.encode() if isinstance(payload, str) else payload
        try:
            signer, signature, content_type, content_encoding, body = base64.b64decode(raw).split(
                _SEPARATOR, 4
            )
            signer_id = base64.b64decode(signer).decode()
            signature = base64.b64decode(signature)
        except (ValueError, binascii.Error) as exc:
            raise SecurityError(f"not a signed message: {exc}") from exc
        self.store[signer_id].verify(body, signature, self.digest)
        # Verified: the inner payload is trusted whatever accept_content says (it named 'auth').
        return serialization.loads(body, content_type.decode(), content_encoding.decode())

    def register(self) -> None:
        serialization.register(NAME, self.encode, self.decode, CONTENT_TYPE, CONTENT_ENCODING)
