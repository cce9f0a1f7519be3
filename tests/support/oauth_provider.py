"""OAuth2 for mailboxes and the smarthost (issue 16), on loopback only:

- `OAuthProvider`: oidc-provider-mock (a real OAuth2/OIDC provider, Authlib's server side) in a
  thread: users, the authorization-code flow a person would go through, the refresh grant,
  revocation, userinfo. Its refresh grant drops the previous access token (which is how a
  test makes a token the poller holds stale) and `revoke` kills a user's refresh token.
- `dovecot_oauth`: a real Dovecot whose XOAUTH2/OAUTHBEARER logins are checked against that
  provider's /userinfo (tools/peers/start-dovecot-oauth2.sh), with a pool of users.
- `XOAuth2Sink`: an aiosmtpd SMTP server that accepts AUTH XOAUTH2 only with a token the
  provider vouches for (its userinfo names the same address), and mail only after it.
- `Gate`: a TCP relay in front of the provider that can be shut (connections refused) and
  opened again on the same port: "the token endpoint is down".
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session
from imapclient import IMAPClient

from tests.support.dovecot import INSTALL_HINT, wait_listening
from tests.support.peers import ROOT, Received, SmtpSink, _LoopThread, free_port

CLIENT_ID = "mailgate-mailboxes"
CLIENT_SECRET = "loopback-mailbox-secret"
REDIRECT_URI = "http://127.0.0.1:9/callback"  # never contacted: the 302's Location is read


@dataclass
class OAuthProvider:
    issuer: str

    @property
    def token_url(self) -> str:
        return f"{self.issuer}/oauth2/token"

    @property
    def authorize_url(self) -> str:
        return f"{self.issuer}/oauth2/authorize"

    def user(self, email: str) -> None:
        claims = {"email": email, "email_verified": True}
        response = httpx.put(f"{self.issuer}/users/{email}", json=claims, timeout=10)
        assert response.status_code == 204, response.text

    def consent(self, authorize_url: str, email: str) -> str:
        """What the person does at the provider's page: the URL it sends them back to."""
        response = httpx.post(authorize_url, data={"sub": email}, timeout=10)
        assert response.status_code == 302, (response.status_code, response.text[:300])
        return response.headers["location"]

    def grant(self, email: str) -> dict[str, Any]:
        """A person's authorization-code flow: access and refresh token for `email`."""
        self.user(email)
        query = httpx.QueryParams(
            client_id=CLIENT_ID, redirect_uri=REDIRECT_URI, response_type="code",
            scope="openid email", state="s",
        )  # fmt: skip
        back = self.consent(f"{self.authorize_url}?{query}", email)
        code = parse_qs(urlsplit(back).query)["code"][0]
        response = httpx.post(
            self.token_url,
            auth=(CLIENT_ID, CLIENT_SECRET),
            data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI},
            timeout=10,
        )
        response.raise_for_status()
        return dict(response.json())

    def refresh(self, refresh_token: str) -> dict[str, Any]:
        """Someone else refreshes: the provider drops the access token issued before."""
        response = httpx.post(
            self.token_url,
            auth=(CLIENT_ID, CLIENT_SECRET),
            data={"grant_type": "refresh_token", "refresh_token": refresh_token},
            timeout=10,
        )
        response.raise_for_status()
        return dict(response.json())

    def revoke(self, email: str) -> None:
        """An administrator revokes the user's tokens (access and refresh)."""
        response = httpx.post(f"{self.issuer}/users/{email}/revoke-tokens", timeout=10)
        assert response.status_code == 204, response.text

    def userinfo(self, token: str) -> dict[str, Any] | None:
        response = httpx.get(
            f"{self.issuer}/userinfo", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        return dict(response.json()) if response.status_code == 200 else None

    def oauth_toml(self, token_file: Path, token_url: str = "", sasl: str = "xoauth2") -> str:
        """The `oauth_*` keys of a mailbox or of [outbound] for this provider."""
        return (
            f'auth = "oauth2"\noauth_provider = "generic"\n'
            f'oauth_token_url = "{token_url or self.token_url}"\n'
            f'oauth_authorize_url = "{self.authorize_url}"\n'
            f'oauth_client_id = "{CLIENT_ID}"\noauth_client_secret = "{CLIENT_SECRET}"\n'
            f'oauth_scope = "openid email"\noauth_sasl = "{sasl}"\n'
            f'oauth_refresh_token_file = "{token_file}"\n'
        )


@pytest.fixture(scope="session")
def oauth_provider() -> Iterator[OAuthProvider]:
    from oidc_provider_mock import run_server_in_thread

    with run_server_in_thread(port=0) as server:
        host, port = server.server_address[:2]
        assert host == "127.0.0.1", host  # Dovecot is given the IP (localhost may be ::1)
        yield OAuthProvider(f"http://127.0.0.1:{port}")


# -- Dovecot validating bearer tokens against the provider -----------------------------------

POOL = [(f"o{i:03d}", f"pw-{uuid.uuid4().hex[:8]}") for i in range(40)]
DOMAIN = "example.com"


@dataclass
class OAuthMailbox:
    """A Dovecot user `oNNN`, whose OAuth identity is oNNN@example.com."""

    port: int
    local: str
    password: str

    @property
    def email(self) -> str:
        return f"{self.local}@{DOMAIN}"

    def client(self) -> IMAPClient:
        c = IMAPClient("127.0.0.1", self.port, ssl=False, timeout=30)
        c.login(self.local, self.password)  # PLAIN, like another mail client would
        return c

    def append(self, raw: bytes, folder: str = "INBOX") -> int:
        with self.client() as c:
            reply = c.append(folder, raw)
        return int(reply.split(b"]")[0].split()[-1])

    def count(self, folder: str) -> int:
        with self.client() as c:
            if not c.folder_exists(folder):
                return 0
            return int(c.folder_status(folder, [b"MESSAGES"])[b"MESSAGES"])

    def toml(self, provider: OAuthProvider, token_file: Path, sasl: str = "xoauth2") -> str:
        lines = [
            "[[imap.mailboxes]]",
            f'name = "{self.local}"',
            'host = "127.0.0.1"',
            f"port = {self.port}",
            'security = "none"',
            f'username = "{self.email}"',
            'address = "support@example.com"',
            "poll_seconds = 3600",
        ]
        return "\n".join(lines) + "\n" + provider.oauth_toml(token_file, sasl=sasl)


@dataclass
class DovecotOAuth:
    dir: Path
    port: int
    free: list[tuple[str, str]] = field(default_factory=lambda: list(POOL))

    def take(self) -> OAuthMailbox:
        local, password = self.free.pop(0)
        return OAuthMailbox(self.port, local, password)


@pytest.fixture(scope="session")
def dovecot_oauth(oauth_provider: OAuthProvider) -> Iterator[DovecotOAuth]:
    if not shutil.which("dovecot"):
        pytest.skip(INSTALL_HINT)
    d = Path(tempfile.mkdtemp(prefix="mgdvo-", dir="/tmp"))  # o+x parents for `nobody`
    port = free_port()
    proc = subprocess.Popen(
        [str(ROOT / "tools/peers/start-dovecot-oauth2.sh"), str(d), str(port),
         oauth_provider.issuer, f"{POOL[0][0]}@{DOMAIN}"],
        env={**os.environ, "FOREGROUND": "1",
             "DOVECOT_USERS": " ".join(f"{u}:{p}" for u, p in POOL)},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_listening(port)
    except TimeoutError:
        proc.kill()
        err = proc.communicate(timeout=10)[1].decode(errors="replace")
        shutil.rmtree(d, ignore_errors=True)
        raise RuntimeError(f"dovecot (oauth2) did not start: {err}") from None
    yield DovecotOAuth(d, port)
    proc.terminate()
    proc.wait(15)
    shutil.rmtree(d, ignore_errors=True)


# -- an SMTP smarthost that wants AUTH XOAUTH2 ----------------------------------------------

XOAUTH2_RE = re.compile(r"^user=([^\x01]+)\x01auth=Bearer ([^\x01]+)\x01\x01$")


class XOAuth2Sink(SmtpSink):
    """A smarthost: AUTH XOAUTH2 only, required before MAIL (aiosmtpd's `authenticator` decides,
    asking the provider's /userinfo whose token it is); every refusal is counted."""

    def __init__(self, provider: OAuthProvider) -> None:
        self.provider = provider
        self.accepted: list[str] = []  # user names, one per successful AUTH
        self.refused = 0
        super().__init__()

    async def _start(self) -> asyncio.AbstractServer:
        loop = asyncio.get_running_loop()

        def factory() -> SMTP:
            return SMTP(
                self, loop=loop, authenticator=self.authenticate, auth_required=True,
                auth_require_tls=False,  # loopback only
            )  # fmt: skip

        return await loop.create_server(factory, "127.0.0.1", 0)

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        if len(args) == 2:
            blob = args[1]
        else:
            answer = await server.challenge_auth("", encode_to_b64=False)
            if not isinstance(answer, bytes):
                return AuthResult(success=False, handled=True)
            blob = base64.b64encode(answer).decode()
        try:
            text = base64.b64decode(blob, validate=True).decode()
        except ValueError:
            return AuthResult(success=False, handled=False)
        result = server._authenticate("XOAUTH2", text)
        if not result.success:
            # RFC-less but what Google and Microsoft do: a 334 with an error, then 535.
            await server.challenge_auth('{"status":"401","schemes":"bearer"}')
        return result

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        match = XOAUTH2_RE.match(data) if mechanism == "XOAUTH2" else None
        info = self.provider.userinfo(match.group(2)) if match else None
        if match and info and info.get("email") == match.group(1):
            self.accepted.append(match.group(1))
            return AuthResult(success=True, auth_data=match.group(1))
        self.refused += 1
        return AuthResult(success=False, handled=False)  # smtp_AUTH answers 535

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if not session.authenticated:
            return "530 5.7.0 Authentication required"
        with self.cond:
            self.messages.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
            )
            self.cond.notify_all()
        return "250 OK"


# -- a token endpoint that can go down ---------------------------------------------------------


class Gate:
    """127.0.0.1:port relays to `target`; `shut()` stops listening (connection refused),
    `open()` listens on the same port again."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._lt = _LoopThread("gate")
        self._server: asyncio.AbstractServer | None = None
        self.connections = 0
        self._lock = threading.Lock()
        self.open()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(OSError):
            writer.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    def open(self) -> None:
        async def start() -> asyncio.AbstractServer:
            return await asyncio.start_server(self._client, "127.0.0.1", self.port)

        self._server = self._lt.call(start())

    def shut(self) -> None:
        server, self._server = self._server, None
        if server is not None:

            async def stop() -> None:
                server.close()
                await server.wait_closed()

            self._lt.call(stop())

    def close(self) -> None:
        self.shut()
        self._lt.close()
