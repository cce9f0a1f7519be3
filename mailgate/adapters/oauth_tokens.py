"""OAuth2 access tokens for IMAP mailboxes and the smarthost (issue 16).

A token endpoint client (httpx) for two grants:

- `client_credentials`: app-only access (Microsoft's recommended way for a daemon); nothing
  stored, a new token is asked for whenever the last one is about to expire.
- `refresh_token`: a refresh token obtained once by `mailgate oauth authorize NAME` is kept in
  a file of its own (mode 0600, in `data_dir/oauth/` unless the config names one). It is read
  at each refresh, so a new authorization needs no restart, and rewritten (atomically, 0600)
  when the provider rotates it.

Presets fill in the endpoints and scopes of `microsoft` (tenant) and `google`; `generic` takes
them from the config. The access token is refreshed `REFRESH_MARGIN` before it expires and,
once, when the server refused it (`invalidate()`); the caller backs off after that. Tokens
never appear in logs or in error messages: only the endpoint's `error` and its description.

    TokenError              the token endpoint gave no token
      .temporary = True     unreachable, timed out, 5xx, 429: try later
      .temporary = False    refused (invalid_grant, invalid_client, ...), or no refresh token
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote

import httpx

from mailgate import logs
from mailgate.config import ImapMailbox, OAuthKeys, OutboundSection

REFRESH_MARGIN = 300.0  # seconds before expiry (or a quarter of a short lifetime)
DEFAULT_LIFETIME = 3600.0  # when the endpoint does not say (expires_in)
MAX_RESPONSE_BYTES = 256 * 1024


@dataclass(frozen=True)
class Preset:
    token_url: str
    authorize_url: str
    device_url: str
    scope_delegated: str  # refresh_token grant: a user's mailbox, on the user's behalf
    scope_app: str  # client_credentials grant
    authorize_params: tuple[tuple[str, str], ...] = ()


MS = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0"
PRESETS: dict[str, Preset] = {
    "microsoft": Preset(
        token_url=f"{MS}/token",
        authorize_url=f"{MS}/authorize",
        device_url=f"{MS}/devicecode",
        scope_delegated="https://outlook.office.com/IMAP.AccessAsUser.All "
        "https://outlook.office.com/SMTP.Send offline_access",
        scope_app="https://outlook.office365.com/.default",
    ),
    "google": Preset(
        token_url="https://oauth2.googleapis.com/token",  # noqa: S106 (a URL)
        authorize_url="https://accounts.google.com/o/oauth2/v2/auth",
        device_url="",  # Google's device flow does not allow the mail scope
        scope_delegated="https://mail.google.com/",
        scope_app="https://mail.google.com/",
        # A refresh token is only issued for offline access, and again only with consent.
        authorize_params=(("access_type", "offline"), ("prompt", "consent")),
    ),
}


@dataclass(frozen=True)
class OAuthSettings:
    """One mailbox's (or the smarthost's) OAuth2 client, with the presets applied."""

    name: str  # the mailbox's name, or "outbound"
    username: str  # the SASL user name (the mailbox's address)
    provider: str
    grant: str
    token_url: str
    authorize_url: str
    device_url: str
    client_id: str
    client_secret: str
    client_secret_file: str
    scope: str
    refresh_token_file: Path
    client_auth: str  # "basic" or "post"
    sasl: str  # "xoauth2" or "oauthbearer"
    redirect_uri: str
    authorize_params: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_config(cls, name: str, username: str, keys: OAuthKeys) -> OAuthSettings:
        preset = PRESETS.get(keys.oauth_provider)
        tenant = quote(keys.oauth_tenant, safe="")

        def url(own: str, preset_url: str) -> str:
            return own or preset_url.format(tenant=tenant)

        if preset is None:
            scope = keys.oauth_scope
        elif keys.oauth_grant == "client_credentials":
            scope = keys.oauth_scope or preset.scope_app
        else:
            scope = keys.oauth_scope or preset.scope_delegated
        return cls(
            name=name,
            username=username,
            provider=keys.oauth_provider,
            grant=keys.oauth_grant,
            token_url=url(keys.oauth_token_url, preset.token_url if preset else ""),
            authorize_url=url(keys.oauth_authorize_url, preset.authorize_url if preset else ""),
            device_url=url(keys.oauth_device_url, preset.device_url if preset else ""),
            client_id=keys.oauth_client_id,
            client_secret=keys.oauth_client_secret,
            client_secret_file=keys.oauth_client_secret_file,
            scope=scope,
            refresh_token_file=Path(keys.oauth_refresh_token_file),
            client_auth=keys.oauth_client_auth,
            sasl=keys.oauth_sasl,
            redirect_uri=keys.oauth_redirect_uri,
            authorize_params=preset.authorize_params if preset else (),
        )


class TokenError(Exception):
    def __init__(self, message: str, *, temporary: bool, error: str = "") -> None:
        super().__init__(message)
        self.temporary = temporary
        self.error = error  # the endpoint's `error` code, when it gave one


# -- storage of the refresh token -------------------------------------------------------------


def read_refresh_token(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return ""


def write_refresh_token(path: Path, token: str) -> None:
    """Atomically, mode 0600 from the first byte; the folder is made 0700 when missing."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)  # mkstemp: 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(token + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # the rename is durable once the folder is synced
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


# -- the token endpoint ----------------------------------------------------------------------


def client_secret(settings: OAuthSettings) -> str:
    if settings.client_secret_file:
        # Read at each request, so a rotated secret needs no restart.
        return Path(settings.client_secret_file).read_text(encoding="utf-8").strip()
    return settings.client_secret


def token_request(
    http: httpx.Client, settings: OAuthSettings, form: dict[str, str]
) -> dict[str, Any]:
    """POST to the token endpoint with the client's credentials; the JSON answer, or
    TokenError naming what went wrong (never the token or the secret)."""
    data = dict(form)
    auth: tuple[str, str] | None = None
    secret = client_secret(settings)
    if secret and settings.client_auth == "basic":
        # RFC 6749 2.3.1: form-encode both before Basic.
        auth = (quote(settings.client_id, safe=""), quote(secret, safe=""))
    else:
        data["client_id"] = settings.client_id
        if secret:
            data["client_secret"] = secret
    where = settings.token_url
    try:
        response = http.post(
            settings.token_url, data=data, auth=auth, headers={"Accept": "application/json"}
        )
    except httpx.HTTPError as exc:
        raise TokenError(
            f"token endpoint {where} unreachable: {type(exc).__name__}: {exc}", temporary=True
        ) from None
    body: dict[str, Any] = {}
    if len(response.content) <= MAX_RESPONSE_BYTES:
        with contextlib.suppress(ValueError):
            parsed = response.json()
            body = parsed if isinstance(parsed, dict) else {}
    if response.status_code == 200 and isinstance(body.get("access_token"), str):
        return body
    error = str(body.get("error") or "")
    description = str(body.get("error_description") or "")[:300]
    if response.status_code >= 500 or response.status_code == 429:
        raise TokenError(
            f"token endpoint {where} answered {response.status_code}"
            + (f": {error}" if error else ""),
            temporary=True,
            error=error,
        )
    if response.status_code == 200:
        raise TokenError(f"token endpoint {where} gave no access_token", temporary=True)
    detail = f"{error}: {description}" if description else error or "no error code"
    raise TokenError(
        f"token endpoint {where} refused ({response.status_code} {detail})",
        temporary=False,
        error=error,
    )


class OAuthTokens:
    """The current access token of one mailbox or smarthost; safe to share between threads."""

    def __init__(
        self,
        settings: OAuthSettings,
        *,
        http: httpx.Client | None = None,
        now: Callable[[], float] = time.time,
        timeout: float = 30.0,
    ) -> None:
        self.settings = settings
        self._http = http or httpx.Client(timeout=timeout, follow_redirects=False)
        self._now = now
        self._lock = threading.Lock()
        self._token = ""
        self._expires_at = 0.0
        self._refresh_at = 0.0
        self.last_error = ""

    @property
    def username(self) -> str:
        return self.settings.username

    @property
    def mechanism(self) -> str:
        return self.settings.sasl

    @property
    def expires_at(self) -> float | None:
        """When the access token in hand expires (epoch seconds), or None without one."""
        return self._expires_at if self._token else None

    def access_token(self) -> str:
        """A token valid for a while yet: the one in hand, or a new one (TokenError)."""
        with self._lock:
            if self._token and self._now() < self._refresh_at:
                return self._token
            return self._obtain()

    def invalidate(self) -> None:
        """The server refused the token: the next access_token() asks for a new one."""
        with self._lock:
            self._token = ""

    def _obtain(self) -> str:
        s = self.settings
        form = {"grant_type": s.grant}
        refresh = ""
        if s.scope:
            form["scope"] = s.scope
        if s.grant == "refresh_token":
            refresh = read_refresh_token(s.refresh_token_file)
            if not refresh:
                self._fail(
                    TokenError(
                        f"no refresh token in {s.refresh_token_file}: run "
                        f"`mailgate oauth authorize {s.name}`",
                        temporary=False,
                    )
                )
            form["refresh_token"] = refresh
        try:
            body = token_request(self._http, s, form)
        except TokenError as exc:
            if exc.error == "invalid_grant":
                exc = TokenError(
                    f"{exc}; the refresh token was revoked or has expired: run "
                    f"`mailgate oauth authorize {s.name}`",
                    temporary=False,
                    error=exc.error,
                )
            self._fail(exc)
        rotated = body.get("refresh_token")
        if s.grant == "refresh_token" and isinstance(rotated, str) and rotated != refresh:
            write_refresh_token(s.refresh_token_file, rotated)
            logs.info("oauth.refresh_token_rotated", mailbox=s.name, file=s.refresh_token_file)
        now = self._now()
        try:
            lifetime = float(body.get("expires_in") or DEFAULT_LIFETIME)
        except (TypeError, ValueError):
            lifetime = DEFAULT_LIFETIME
        self._token = body["access_token"]
        self._expires_at = now + lifetime
        self._refresh_at = now + lifetime - min(REFRESH_MARGIN, lifetime / 4)
        self.last_error = ""
        logs.info("oauth.token", mailbox=s.name, grant=s.grant, expires_in=int(lifetime))
        return self._token

    def _fail(self, exc: TokenError) -> NoReturn:
        self._token = ""
        self.last_error = str(exc)
        logs.warning("oauth.token_failed", mailbox=self.settings.name, error=str(exc))
        raise exc

    def close(self) -> None:
        self._http.close()


def tokens_for(name: str, username: str, keys: OAuthKeys) -> OAuthTokens:
    return OAuthTokens(OAuthSettings.from_config(name, username, keys))


def mailbox_tokens(box: ImapMailbox) -> OAuthTokens | None:
    """The tokens of an `[[imap.mailboxes]]` entry with `auth = "oauth2"`, else None."""
    return tokens_for(box.name, box.username, box) if box.auth == "oauth2" else None


def outbound_tokens(outbound: OutboundSection) -> OAuthTokens | None:
    """The smarthost's tokens with `[outbound] auth = "oauth2"`, else None."""
    if outbound.auth != "oauth2":
        return None
    return tokens_for("outbound", outbound.username, outbound)
