"""OpenID Connect providers on loopback for the sign-in tests (issue 14).

- `MockProvider`: oidc-provider-mock, a real provider (Authlib's server side) with a sign-in
  form: the happy paths, the linking rules, `email_verified`, a refusal by the person.
- `ForgeProvider`: a small provider of our own (discovery, JWKS, authorize, token) whose ID
  tokens are signed by keys the test holds, so it can hand out what a real provider should
  never send: a bad signature, another audience, an expired token, an old nonce, a rotated
  key. It checks PKCE (S256) like a strict provider, and can hang to test timeouts.
- `silent_port`: a port that accepts connections and never answers.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

CLIENT_ID = "mailgate-portal"
CLIENT_SECRET = "loopback-client-secret"


# -- oidc-provider-mock ----------------------------------------------------------------------


@contextmanager
def mock_provider() -> Iterator[MockProvider]:
    from oidc_provider_mock import run_server_in_thread

    with run_server_in_thread(port=0, require_nonce=True) as server:
        yield MockProvider(f"http://localhost:{server.server_port}")


@dataclass
class MockProvider:
    issuer: str

    def user(self, sub: str, email: str, verified: bool = True, name: str = "") -> None:
        claims: dict[str, Any] = {"email": email, "email_verified": verified}
        if name:
            claims["name"] = name
        response = httpx.put(f"{self.issuer}/users/{sub}", json=claims, timeout=10)
        assert response.status_code == 204, response.text

    def authorize(self, url: str, sub: str, deny: bool = False) -> str:
        """What the person does at the provider's page: the callback URL it sends them to."""
        form = {"action": "deny"} if deny else {"sub": sub}
        response = httpx.post(url, data=form, timeout=10)
        assert response.status_code == 302, (response.status_code, response.text[:500])
        return response.headers["location"]


# -- a provider of our own -----------------------------------------------------------------


@dataclass
class ForgeProvider:
    """`mode` says what the next token is: "good", "bad_signature", "other_audience",
    "expired", "old_nonce", "rotated" (a new key, published in the JWKS from now on),
    "error" (the token endpoint refuses), "hang" (the token endpoint never answers)."""

    issuer: str = ""
    mode: str = "good"
    keys: list[RSAKey] = field(default_factory=list)
    stranger: RSAKey | None = None
    requests: dict[str, dict[str, str]] = field(default_factory=dict)  # code -> request
    used_nonces: list[str] = field(default_factory=list)
    claims: dict[str, Any] = field(default_factory=dict)
    jwks_fetches: int = 0
    release: threading.Event = field(default_factory=threading.Event)

    def token(self, code: str, verifier: str) -> tuple[int, dict[str, Any]]:
        if self.mode == "hang":
            self.release.wait(30)
            return 503, {"error": "temporarily_unavailable"}
        request = self.requests.pop(code, None)
        if request is None:
            return 400, {"error": "invalid_grant"}
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        if (
            request.get("code_challenge_method") != "S256"
            or request.get("code_challenge") != challenge.rstrip(b"=").decode()
        ):
            return 400, {"error": "invalid_grant", "error_description": "PKCE"}
        if self.mode == "error":
            return 400, {"error": "invalid_grant"}
        now = int(time.time())
        nonce = request.get("nonce", "")
        claims = {
            "iss": self.issuer,
            "sub": "forge-1",
            "aud": CLIENT_ID,
            "iat": now,
            "exp": now + 300,
            "nonce": nonce,
            "email": "forge@client.example",
            "email_verified": True,
            **self.claims,
        }
        if self.mode == "other_audience":
            claims["aud"] = "someone-else"
        if self.mode == "expired":
            claims["iat"], claims["exp"] = now - 400, now - 200  # past the leeway
        if self.mode == "old_nonce":
            claims["nonce"] = self.used_nonces[0]
        self.used_nonces.append(nonce)
        key = self.keys[-1]
        if self.mode == "bad_signature":
            assert self.stranger is not None
            key = self.stranger  # same kid as ours, another private key
        if self.mode == "rotated":
            self.keys.append(RSAKey.generate_key(2048, parameters={"kid": f"k{len(self.keys)}"}))
            key = self.keys[-1]
        header = {"alg": "RS256", "kid": key.kid}
        return 200, {
            "access_token": secrets.token_urlsafe(16),
            "token_type": "Bearer",
            "expires_in": 300,
            "id_token": jwt.encode(header, claims, key),
        }

    def jwks(self) -> dict[str, Any]:
        self.jwks_fetches += 1
        return KeySet([RSAKey.import_key(k.as_dict(private=False)) for k in self.keys]).as_dict()


def _handler(forge: ForgeProvider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _json(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/.well-known/openid-configuration":
                self._json(200, {
                    "issuer": forge.issuer,
                    "authorization_endpoint": f"{forge.issuer}/authorize",
                    "token_endpoint": f"{forge.issuer}/token",
                    "jwks_uri": f"{forge.issuer}/jwks",
                    "response_types_supported": ["code"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                    "subject_types_supported": ["public"],
                })  # fmt: skip
            elif url.path == "/jwks":
                self._json(200, forge.jwks())
            elif url.path == "/authorize":
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                code = secrets.token_urlsafe(16)
                forge.requests[code] = query
                back = urlencode({"code": code, "state": query.get("state", "")})
                self.send_response(302)
                self.send_header("Location", f"{query['redirect_uri']}?{back}")
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self._json(404, {"error": "not_found"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            auth = self.headers.get("Authorization", "")
            expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
            if auth != f"Basic {expected}":
                self._json(401, {"error": "invalid_client"})
                return
            status, body = forge.token(form.get("code", ""), form.get("code_verifier", ""))
            self._json(status, body)

    return Handler


@contextmanager
def forge_provider() -> Iterator[ForgeProvider]:
    first = RSAKey.generate_key(2048, parameters={"kid": "k0"})
    stranger = RSAKey.generate_key(2048, parameters={"kid": "k0"})
    forge = ForgeProvider(keys=[first], stranger=stranger)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(forge))
    server.daemon_threads = True
    forge.issuer = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="forge-oidc", daemon=True)
    thread.start()
    try:
        yield forge
    finally:
        forge.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextmanager
def silent_port() -> Iterator[int]:
    """A listening socket nobody accepts on: connections open, requests get no answer."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()
