"""RSA keys and X.509 certificates read from PEM files, and the trusted certificate store."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

from caraway.exceptions import ImproperlyConfigured, SecurityError

try:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImproperlyConfigured(
        "message signing needs the cryptography package: pip install 'caraway[auth]'"
    ) from exc


def digest_named(name: str) -> hashes.HashAlgorithm:
    """``"sha256"`` -> the hash object (Celery's ``security_digest`` names)."""
    algorithm = getattr(hashes, name.upper().replace("-", "_"), None)
    if not (isinstance(algorithm, type) and issubclass(algorithm, hashes.HashAlgorithm)):
        raise ImproperlyConfigured(f"security_digest {name!r} is not a hash cryptography knows")
    return algorithm()


def _pss(digest: hashes.HashAlgorithm) -> padding.PSS:
    # The padding Celery signs with; the verifier must use the same to accept its messages.
    return padding.PSS(mgf=padding.MGF1(digest), salt_length=padding.PSS.MAX_LENGTH)


@contextmanager
def _as_security_error(what: str) -> Iterator[None]:
    try:
        yield
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm) as exc:
        raise SecurityError(f"{what}: {exc or type(exc).__name__}") from exc


class PrivateKey:
    """The RSA key this process signs with."""

    def __init__(self, pem: bytes, password: bytes | str | None = None) -> None:
        secret = password.encode() if isinstance(password, str) else password
        with _as_security_error("invalid private key"):
            key = serialization.load_pem_private_key(pem, password=secret)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise SecurityError("invalid private key: only RSA keys can sign (as in Celery)")
        self._key = key

    def sign(self, data: bytes, digest: hashes.HashAlgorithm) -> bytes:
        with _as_security_error("cannot sign"):
            return self._key.sign(data, _pss(digest), digest)


class Certificate:
    """An X.509 certificate with an RSA public key; its id names the signer on the wire."""

    def __init__(self, pem: bytes) -> None:
        with _as_security_error("invalid certificate"):
            cert = x509.load_pem_x509_certificate(pem)
        public_key = cert.public_key()
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise SecurityError("invalid certificate: only RSA certificates are supported")
        self._cert, self._public_key = cert, public_key

    @property
    def id(self) -> str:
        """Issuer attribute values then serial number, space separated: Celery's signer id."""
        issuer = " ".join(str(attribute.value) for attribute in self._cert.issuer)
        return f"{issuer} {self._cert.serial_number}"

    def has_expired(self) -> bool:
        return datetime.now(timezone.utc) >= self._cert.not_valid_after_utc

    def verify(self, data: bytes, signature: bytes, digest: hashes.HashAlgorithm) -> None:
        if self.has_expired():
            raise SecurityError(f"certificate {self.id!r} has expired")
        with _as_security_error(f"bad signature from {self.id!r}"):
            self._public_key.verify(signature, data, _pss(digest), digest)


class CertStore:
    """The certificates whose signatures this process trusts, by id."""

    def __init__(self, certificates: list[Certificate]) -> None:
        self._by_id: dict[str, Certificate] = {}
        for cert in certificates:
            if cert.id in self._by_id:
                raise SecurityError(f"two certificates in the store have the id {cert.id!r}")
            self._by_id[cert.id] = cert

    @classmethod
    def from_path(cls, path: str) -> CertStore:
        """Every file of a directory, or of a glob pattern (``ssl/*.pem``); none may be expired."""
        pattern = os.path.join(path, "*") if os.path.isdir(path) else path
        files = sorted(glob.glob(pattern))
        if not files:
            raise ImproperlyConfigured(f"security_cert_store {path!r} holds no certificate")
        certificates = []
        for name in files:
            with open(name, "rb") as file:
                cert = Certificate(file.read())
            if cert.has_expired():
                raise SecurityError(f"certificate {name} ({cert.id!r}) in the store has expired")
            certificates.append(cert)
        return cls(certificates)

    def __getitem__(self, cert_id: str) -> Certificate:
        try:
            return self._by_id[cert_id]
        except KeyError:
            raise SecurityError(f"no trusted certificate has the id {cert_id!r}") from None
