"""The token endpoint client (issue 16) against a token endpoint of our own (httpx's transport
interface, in memory: oidc-provider-mock has no client credentials grant): the presets, both
grants, the refresh margin, rotation written 0600, what each failure says, and the config's
strict validation of the oauth_* keys."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest

from mailgate import config as config_mod
from mailgate.adapters.oauth_tokens import (
    OAuthSettings,
    OAuthTokens,
    TokenError,
    read_refresh_token,
    write_refresh_token,
)
from mailgate.config import ImapMailbox
from mailgate.errors import ConfigError


class Endpoint:
    """A token endpoint: answers what the test queues, records every request's form."""

    def __init__(self) -> None:
        self.answers: list[httpx.Response | Exception] = []
        self.forms: list[dict[str, str]] = []
        self.auth: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.forms.append({k: v[0] for k, v in parse_qs(request.content.decode()).items()})
        self.auth.append(request.headers.get("Authorization", ""))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def token(self, access: str, expires_in: int = 3600, refresh: str | None = None) -> None:
        body: dict[str, object] = {"access_token": access, "token_type": "Bearer"}
        body["expires_in"] = expires_in
        if refresh:
            body["refresh_token"] = refresh
        self.answers.append(httpx.Response(200, json=body))


def settings(tmp_path: Path, **keys: str) -> OAuthSettings:
    box = ImapMailbox(
        name="support", username="support@contoso.com", auth="oauth2", host="h",
        oauth_refresh_token_file=str(tmp_path / "oauth" / "support.refresh_token"),
        **keys,  # type: ignore[arg-type]
    )  # fmt: skip
    return OAuthSettings.from_config(box.name, box.username, box)


def client(s: OAuthSettings, endpoint: Endpoint, now: list[float]) -> OAuthTokens:
    http = httpx.Client(transport=httpx.MockTransport(endpoint))
    return OAuthTokens(s, http=http, now=lambda: now[0])


def test_presets():
    ms = settings(Path("/x"), oauth_provider="microsoft", oauth_tenant="contoso.com",
                  oauth_client_id="id", oauth_grant="client_credentials",
                  oauth_client_secret="s")  # fmt: skip
    assert ms.token_url == "https://login.microsoftonline.com/contoso.com/oauth2/v2.0/token"
    assert ms.device_url.endswith("/contoso.com/oauth2/v2.0/devicecode")
    assert ms.scope == "https://outlook.office365.com/.default"
    delegated = settings(Path("/x"), oauth_provider="microsoft", oauth_tenant="t",
                         oauth_client_id="id")  # fmt: skip
    assert "IMAP.AccessAsUser.All" in delegated.scope and "offline_access" in delegated.scope
    google = settings(Path("/x"), oauth_provider="google", oauth_client_id="id")
    assert google.token_url == "https://oauth2.googleapis.com/token"
    assert google.scope == "https://mail.google.com/" and google.device_url == ""
    assert ("access_type", "offline") in google.authorize_params


def test_client_credentials_grant_and_refresh_before_expiry(tmp_path: Path):
    s = settings(tmp_path, oauth_provider="generic", oauth_token_url="https://idp/token",
                 oauth_client_id="id:1", oauth_client_secret="s&cret",
                 oauth_grant="client_credentials", oauth_scope="imap")  # fmt: skip
    endpoint, now = Endpoint(), [1000.0]
    tokens = client(s, endpoint, now)
    endpoint.token("A1", expires_in=3600)
    endpoint.token("A2", expires_in=3600)

    assert tokens.access_token() == "A1"
    assert endpoint.forms[0] == {"grant_type": "client_credentials", "scope": "imap"}
    # RFC 6749 2.3.1: id and secret form-encoded, then Basic.
    assert endpoint.auth[0] == "Basic " + base64.b64encode(b"id%3A1:s%26cret").decode()
    assert tokens.expires_at == 4600.0
    now[0] = 4600.0 - 301  # not yet within the 5-minute margin
    assert tokens.access_token() == "A1" and len(endpoint.forms) == 1
    now[0] = 4600.0 - 299
    assert tokens.access_token() == "A2"
    tokens.invalidate()  # the server refused it: a new one is asked for
    endpoint.token("A3")
    assert tokens.access_token() == "A3"


def test_refresh_token_rotation_is_written_0600(tmp_path: Path):
    s = settings(tmp_path, oauth_provider="google", oauth_client_id="id",
                 oauth_client_secret="sec", oauth_client_auth="post")  # fmt: skip
    write_refresh_token(s.refresh_token_file, "R1")
    endpoint, now = Endpoint(), [0.0]
    tokens = client(s, endpoint, now)
    endpoint.token("A1", refresh="R2")

    assert tokens.access_token() == "A1"

    form = endpoint.forms[0]
    assert form["refresh_token"] == "R1" and form["client_secret"] == "sec"
    assert endpoint.auth == [""]  # "post": the secret in the form, no Basic
    assert read_refresh_token(s.refresh_token_file) == "R2"
    assert stat.S_IMODE(s.refresh_token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(s.refresh_token_file.parent.stat().st_mode) == 0o700


def test_failures_say_what_happened_and_never_the_token(tmp_path: Path, caplog):
    s = settings(tmp_path, oauth_provider="generic", oauth_token_url="https://idp/token",
                 oauth_client_id="id")  # fmt: skip
    endpoint, now = Endpoint(), [0.0]
    tokens = client(s, endpoint, now)

    with pytest.raises(TokenError, match=r"no refresh token in .*mailgate oauth authorize support"):
        tokens.access_token()

    write_refresh_token(s.refresh_token_file, "SECRET-REFRESH")
    endpoint.answers.append(
        httpx.Response(400, json={"error": "invalid_grant", "error_description": "revoked"})
    )
    with pytest.raises(TokenError) as refused:
        tokens.access_token()
    assert not refused.value.temporary and refused.value.error == "invalid_grant"
    assert "refused (400 invalid_grant: revoked)" in str(refused.value)

    endpoint.answers.append(httpx.ConnectError("connection refused"))
    with pytest.raises(TokenError, match="unreachable") as down:
        tokens.access_token()
    assert down.value.temporary

    endpoint.answers.append(httpx.Response(503, text="busy"))
    with pytest.raises(TokenError, match="answered 503") as busy:
        tokens.access_token()
    assert busy.value.temporary
    assert "SECRET-REFRESH" not in caplog.text + json.dumps(endpoint.auth)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"oauth_provider": "yahoo"}, "oauth_provider"),
        ({"oauth_provider": "microsoft", "oauth_client_id": "i"}, "oauth_tenant"),
        ({"oauth_provider": "google", "oauth_client_id": "i", "oauth_client_secret": "s",
          "oauth_grant": "client_credentials"}, "Google offers no client credentials"),
        ({"oauth_provider": "generic", "oauth_client_id": "i"}, "oauth_token_url"),
        ({"oauth_provider": "generic", "oauth_client_id": "i",
          "oauth_token_url": "http://idp.example.com/token"}, "https://"),
        ({"oauth_provider": "google"}, "oauth_client_id"),
        ({"oauth_provider": "generic", "oauth_client_id": "i", "oauth_token_url": "https://t",
          "oauth_grant": "client_credentials"}, "needs one"),
        ({"oauth_provider": "google", "oauth_client_id": "i", "oauth_sasl": "plain"},
         "oauth_sasl"),
    ],
)  # fmt: skip
def test_config_validation(tmp_path: Path, keys: dict[str, str], message: str):
    box = {"host": "h", "username": "u@x.example", "auth": "oauth2", **keys}
    with pytest.raises(ConfigError, match=message):
        config_mod.from_dict({"imap": {"mailboxes": [box]}}, tmp_path / "m.toml", environ={})


def test_config_defaults(tmp_path: Path):
    box = {"host": "h", "username": "u@x.example", "auth": "oauth2",
           "oauth_provider": "google", "oauth_client_id": "i"}  # fmt: skip
    out = {"transport": "smtp://smtp.gmail.com:587", "auth": "oauth2", "username": "u@x.example",
           "oauth_provider": "google", "oauth_client_id": "i"}  # fmt: skip
    cfg = config_mod.from_dict(
        {"mailgate": {"data_dir": "d"}, "imap": {"mailboxes": [box]}, "outbound": out},
        tmp_path / "m.toml", environ={},
    )  # fmt: skip
    (mailbox,) = cfg.imap.mailboxes
    assert mailbox.name == "u@x.example"
    assert mailbox.oauth_refresh_token_file == str(
        tmp_path / "d" / "oauth" / "u@x.example.refresh_token"
    )
    assert cfg.outbound.oauth_refresh_token_file.endswith("/d/oauth/outbound.refresh_token")
    with pytest.raises(ConfigError, match=r"outbound\.auth"):
        config_mod.from_dict({"outbound": {**out, "transport": "maildir:x"}},
                             tmp_path / "m.toml", environ={})  # fmt: skip
