"""Message signing: Celery's ``auth`` serializer, so signed tasks cross between Celery and caraway.

``app.setup_security()`` reads ``security_key``, ``security_certificate``,
``security_cert_store`` and ``security_digest``, turns off decoding of every other serializer
(``allowed_serializers`` excepted, JSON by default so results stay readable) and registers
``auth``. A signed body carries the signer's certificate id and an RSA-PSS signature of the
inner payload; a worker runs it only if a certificate in its store verifies the signature.
Needs the ``cryptography`` package (``pip install "caraway[auth]"``).
"""

from __future__ import annotations

from caraway.security.setup import disable_untrusted_serializers, setup_security

__all__ = ["disable_untrusted_serializers", "setup_security"]
