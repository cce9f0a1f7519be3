"""HTTP-level protections of the portal: cookies, CSRF tokens, security headers, body size.

- The session cookie is HttpOnly, SameSite=Lax, Secure (and `__Host-` prefixed) when the
  portal's base_url is https.
- CSRF: every POST carries a hidden `csrf` field, bound to this browser. Signed in, it must
  equal the session's token, and nothing else will do (not even a signed-out token, which a
  cookie planted by another site could have made); signed out, it must be the HMAC of this
  browser's random `csrf` cookie (signed double submit). A POST whose Origin is another site
  is refused as well.
- Every response gets a strict Content-Security-Policy (no inline script or style, images only
  from us) and friends; pages are never cached.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; worker-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
SESSION_MAX_AGE = 14 * 24 * 3600


@dataclass(frozen=True)
class CookiePolicy:
    secure: bool

    @property
    def session_name(self) -> str:
        return "__Host-mg_session" if self.secure else "mg_session"

    @property
    def csrf_name(self) -> str:
        return "__Host-mg_csrf" if self.secure else "mg_csrf"

    def options(self, max_age: int | None = SESSION_MAX_AGE) -> dict[str, Any]:
        return {
            "max_age": max_age,
            "path": "/",
            "httponly": True,
            "samesite": "lax",
            "secure": self.secure,
        }


class Csrf:
    def __init__(self, key: bytes) -> None:
        self._key = key

    @staticmethod
    def new_cookie() -> str:
        return secrets.token_urlsafe(24)

    def for_cookie(self, cookie: str) -> str:
        return hmac.new(self._key, cookie.encode(), hashlib.sha256).hexdigest()

    def valid(self, submitted: str, session_token: str | None, anon_cookie: str | None) -> bool:
        """`session_token` is the signed-in session's token (None when signed out)."""
        if not submitted:
            return False
        if session_token is not None:  # signed in: only this session's own token
            return hmac.compare_digest(submitted.encode(), session_token.encode())
        return bool(anon_cookie) and hmac.compare_digest(
            submitted.encode(), self.for_cookie(anon_cookie or "").encode()
        )


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def same_origin_post(origin_header: str | None, base_url: str) -> bool:
    """Browsers send Origin on POST; when present it must be ours ("null" is refused)."""
    if origin_header is None:
        return True
    return origin_header.lower() == origin_of(base_url)


def safe_next(value: str | None) -> str | None:
    """A local path to go back to after sign-in; never another site (open redirect)."""
    if not value or not value.startswith("/") or value.startswith("//"):
        return None
    if "\\" in value or any(ord(c) < 32 for c in value) or len(value) > 500:
        return None
    return value


class SecurityHeaders:
    """Adds the security headers to every response (pure ASGI: works for streamed files)."""

    def __init__(self, app: ASGIApp, *, https: bool, static_prefix: str = "/static/") -> None:
        self.app = app
        self.https = https
        self.static_prefix = static_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith(self.static_prefix)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                extra = [
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"same-origin"),
                    (b"cross-origin-opener-policy", b"same-origin"),
                    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
                    (b"cache-control", b"public, max-age=3600" if static else b"no-store"),
                ]
                if self.https:
                    extra.append((b"strict-transport-security", b"max-age=31536000"))
                headers += [(k, v) for k, v in extra if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """Refuses request bodies over `max_bytes` (413), declared or streamed (chunked)."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _too_large(send)
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _too_large(send)


async def _too_large(send: Send) -> None:
    body = b"Request too large"
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
