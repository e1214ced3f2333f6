"""Authentication, CSRF and read-only mode, as one ASGI middleware and one form helper.

Browsers send basic-auth credentials by themselves, so every state-changing request must
also prove it came from the dashboard's own pages: forms carry the token from the
``caraway_csrf`` cookie (double submit, ``SameSite=Strict``). Scripts using Flower's HTTP API
send no cookie; for them a POST is accepted when it carries no cross-site ``Origin`` (every
browser sends one on a cross-site POST, curl and requests send none).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from caraway.dashboard.config import DashboardConfig

CSRF_COOKIE = "caraway_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class CSRFError(Exception):
    """A state-changing request without the dashboard's token."""


def csrf_token(request: Request) -> str:
    """The token the page embeds in its forms (the cookie's, or a new one set by the
    middleware on this response)."""
    token: str = request.cookies.get(CSRF_COOKIE) or request.state.new_csrf
    return token


async def checked_form(request: Request) -> dict[str, str]:
    """The POSTed form (URL-encoded, as the pages send it), once its CSRF token matched the
    cookie's. Read here rather than by Starlette, which would need python-multipart."""
    body = (await request.body()).decode("utf-8", "replace")
    form = {key: values[-1] for key, values in parse_qs(body).items()}
    sent = form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER) or ""
    cookie = request.cookies.get(CSRF_COOKIE) or ""
    if not cookie or not hmac.compare_digest(sent, cookie):
        raise CSRFError("missing or wrong CSRF token: reload the page and try again")
    return form


def _credentials_ok(config: DashboardConfig, header: str) -> bool:
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and config.auth_token:
        return hmac.compare_digest(value.strip(), config.auth_token)
    if scheme.lower() == "basic" and config.basic_auth:
        try:
            user, _, password = base64.b64decode(value.strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return any(
            hmac.compare_digest(user, u) & hmac.compare_digest(password, p)
            for u, p in config.basic_auth
        )
    return False


def _cross_site(request: Request) -> bool:
    """Whether a browser sent this from another site. The browser's own ``Sec-Fetch-Site``
    decides when present (it survives a proxy that rewrites ``Host``); else ``Origin`` is
    compared with ``Host``; a request with neither comes from a script."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site not in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None:
        return False
    return origin == "null" or origin.split("://", 1)[-1] != request.headers.get("host")


class Guard(BaseHTTPMiddleware):
    """Every request: authenticated (when configured), read-only honoured, CSRF cookie set."""

    def __init__(self, app: ASGIApp, config: DashboardConfig) -> None:
        super().__init__(app)
        self.config = config

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        if self.config.needs_auth and not _credentials_ok(
            self.config, request.headers.get("authorization", "")
        ):
            return PlainTextResponse(
                "Authentication required", 401, {"WWW-Authenticate": 'Basic realm="caraway"'}
            )
        if request.method not in SAFE_METHODS:
            if self.config.read_only:
                return _refuse(request, "the dashboard is read-only (--read-only)")
            if _cross_site(request):
                return _refuse(request, "cross-site requests may not change anything")
        request.state.new_csrf = secrets.token_urlsafe(24)
        response = await call_next(request)
        if CSRF_COOKIE not in request.cookies:
            response.set_cookie(CSRF_COOKIE, request.state.new_csrf, samesite="strict",
                                httponly=True, path="/")  # fmt: skip
        return response


def _refuse(request: Request, why: str) -> Response:
    body: Any = {"error": why}
    if "/api/" in request.url.path:
        return JSONResponse(body, 403)
    return PlainTextResponse(f"Forbidden: {why}", 403)
