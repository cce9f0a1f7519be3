"""OAuth2 mailboxes (issue 16) against a real OAuth2 provider (oidc-provider-mock) and a real
Dovecot whose XOAUTH2/OAUTHBEARER logins are checked against that provider: a fresh token logs
in and mail flows; an expired or refused access token is refreshed within the same pass; a
revoked refresh token stops that mailbox alone, said in the logs, /healthz and /metrics."""

from __future__ import annotations

import dataclasses
import email.policy
import logging
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from mailgate import config as config_mod
from mailgate.adapters.imap import ImapPoller, check_mailbox, mailbox_key
from mailgate.adapters.oauth_tokens import OAuthTokens, mailbox_tokens, write_refresh_token
from mailgate.app import App, build
from mailgate.logs import KeyValueFormatter
from mailgate.services.ticket_views import list_tickets
from tests.conftest import make_mail
from tests.support.peers import Mailgate, wait_until

if TYPE_CHECKING:
    from tests.support.oauth_provider import DovecotOAuth, OAuthMailbox, OAuthProvider

pytest_plugins = ["tests.support.oauth_provider"]


def raw_mail(subject: str) -> bytes:
    return make_mail(subject=subject).as_bytes(policy=email.policy.SMTP)


def authorized(provider: OAuthProvider, box: OAuthMailbox, token_file: Path) -> dict:
    """What `mailgate oauth authorize` leaves behind: the refresh token in its file, 0600."""
    tokens = provider.grant(box.email)
    write_refresh_token(token_file, tokens["refresh_token"])
    return tokens


def tickets(app: App) -> list[dict]:
    with app.db.read() as session:
        return list_tickets(session, None)


def poller(app: App, tokens: OAuthTokens, index: int = 0) -> ImapPoller:
    box = app.config.imap.mailboxes[index]
    return ImapPoller(
        box, app.ingestor, app.imap_state, app.metrics, recipient=box.address, tokens=tokens
    )


@contextmanager
def mailgate_log() -> Iterator[list[str]]:
    """mailgate's log lines as an operator reads them (serve turns propagation off)."""
    lines: list[str] = []
    formatter = KeyValueFormatter()

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(formatter.format(record))

    logger, keep = logging.getLogger("mailgate"), Keep()
    level = logger.level
    logger.addHandler(keep)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(keep)
        logger.setLevel(level)


class FakeTime:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def box(dovecot_oauth: DovecotOAuth) -> OAuthMailbox:
    return dovecot_oauth.take()


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    return tmp_path / "oauth" / "box.refresh_token"


@pytest.fixture
def config_extra(
    oauth_provider: OAuthProvider,
    box: OAuthMailbox,
    token_file: Path,
    request: pytest.FixtureRequest,
) -> str:
    authorized(oauth_provider, box, token_file)
    return box.toml(oauth_provider, token_file, sasl=getattr(request, "param", "xoauth2"))


@pytest.fixture
def app(config_path: Path) -> Iterator[App]:
    built = build(config_mod.load(config_path))
    built.db.upgrade()
    yield built
    built.db.dispose()


@pytest.mark.parametrize("config_extra", ["xoauth2", "oauthbearer"], indirect=True)
def test_a_fresh_token_logs_in_and_mail_flows(app: App, box: OAuthMailbox, token_file: Path):
    uid = box.append(raw_mail("Connexion OAuth2"))
    tokens = mailbox_tokens(app.config.imap.mailboxes[0])
    assert tokens is not None

    report = poller(app, tokens).run_once()

    assert report.stored == [uid]
    assert [t["subject"] for t in tickets(app)] == ["Connexion OAuth2"]
    assert box.count("INBOX") == 0 and box.count("Processed") == 1
    assert tokens.expires_at is not None and tokens.expires_at > time.time() + 60
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600


def test_an_expiring_token_is_refreshed_before_the_pass(app: App, box: OAuthMailbox):
    clock = FakeTime()
    tokens = OAuthTokens(_settings(app), now=clock)
    first = poller(app, tokens)
    assert first.run_once().stored == []
    before = tokens.access_token()
    expiry = tokens.expires_at
    assert expiry is not None

    clock.now = expiry - 60  # within the margin: the token in hand would die mid-session
    uid = box.append(raw_mail("Juste avant l'expiration"))
    report = poller(app, tokens).run_once()

    assert report.stored == [uid]
    assert tokens.access_token() != before  # a new one was asked for, before logging in


def test_a_refused_access_token_is_refreshed_without_losing_the_pass(
    app: App, box: OAuthMailbox, oauth_provider: OAuthProvider, token_file: Path
):
    tokens = OAuthTokens(_settings(app))
    assert poller(app, tokens).run_once().stored == []
    held = tokens.access_token()
    # The provider kills every token of the mailbox (an administrator's revocation, a password
    # change), then the operator authorizes again: the access token we hold is dead, though we
    # believe it valid for an hour; the new refresh token is in the file.
    oauth_provider.revoke(box.email)
    authorized(oauth_provider, box, token_file)
    uid = box.append(raw_mail("Jeton périmé"))

    with mailgate_log() as lines:
        report = poller(app, tokens).run_once()

    assert report.stored == [uid]  # refused once, refreshed, logged in: same pass
    new = tokens.access_token()
    assert new != held
    assert any("event=imap.token_refused" in line for line in lines)
    assert not any(held in line or new in line for line in lines)  # no token in any log


def _settings(app: App):  # type: ignore[no-untyped-def]
    tokens = mailbox_tokens(app.config.imap.mailboxes[0])
    assert tokens is not None
    return tokens.settings


class TestRevokedMailbox:
    """Two OAuth2 mailboxes in `serve`; one's refresh token was revoked."""

    @pytest.fixture
    def other(self, dovecot_oauth: DovecotOAuth) -> OAuthMailbox:
        return dovecot_oauth.take()

    @pytest.fixture
    def config_extra(
        self,
        oauth_provider: OAuthProvider,
        box: OAuthMailbox,
        other: OAuthMailbox,
        token_file: Path,
        tmp_path: Path,
    ) -> str:
        other_file = tmp_path / "oauth" / "other.refresh_token"
        authorized(oauth_provider, box, token_file)
        authorized(oauth_provider, other, other_file)
        oauth_provider.revoke(box.email)  # an administrator revoked mailgate's access
        return (
            box.toml(oauth_provider, token_file)
            + other.toml(oauth_provider, other_file)
            + '[metrics]\nlisten = "127.0.0.1:0"\n'
        )

    def test_stops_that_mailbox_only(self, mailgate: Mailgate, box, other):
        app = mailgate.app
        bad, good = (mailbox_key(b) for b in app.config.imap.mailboxes)
        with mailgate_log() as lines:
            wait_until(lambda: app.mailboxes.get(good) == "idle", 15, "the good mailbox to IDLE")
            wait_until(lambda: "TokenError" in app.mailboxes.get(bad, ""), 15, "the failure")
            # It backs off and tries again (1 s, 2 s, ...), logging each failure.
            wait_until(lambda: any("imap.auth_failed" in x for x in lines), 15, "the log line")
        other.append(raw_mail("Toujours servi"))
        box.append(raw_mail("En attente"))
        wait_until(lambda: len(tickets(app)) == 1, 15, "the good mailbox to ticket its mail")
        assert tickets(app)[0]["subject"] == "Toujours servi"
        assert box.count("INBOX") == 1  # waits for a new authorization, nothing lost

        # Logs: an error naming the mailbox, the endpoint's refusal and what to do.
        line = next(x for x in lines if "imap.auth_failed" in x)
        assert line.startswith("level=error") and f"mailbox={bad}" in line
        assert "stage=token_endpoint" in line and "invalid_grant" in line
        assert f"mailgate oauth authorize {box.local}" in line

        host, port = app.listeners["metrics"]
        health = httpx.get(f"http://{host}:{port}/healthz", timeout=10).json()
        assert health["imap"][bad].startswith("error: TokenError")
        assert "invalid_grant" in health["mailboxes"][bad]["error"]
        assert health["mailboxes"][bad]["last_login"] is None
        assert health["mailboxes"][good]["error"] is None
        assert health["mailboxes"][good]["last_login"] and health["mailboxes"][good]["last_poll"]
        assert health["mailboxes"][good]["token_expires_at"]

        text = httpx.get(f"http://{host}:{port}/metrics", timeout=10).text
        failures = f'mailgate_imap_auth_failures_total{{mailbox="{bad}",stage="token_endpoint"}}'
        assert _metric(text, failures) >= 1
        assert _metric(text, f'mailgate_imap_connected{{mailbox="{bad}"}}') == 0
        assert _metric(text, f'mailgate_imap_connected{{mailbox="{good}"}}') == 1
        expiry = _metric(text, f'mailgate_imap_token_expiry_timestamp_seconds{{mailbox="{good}"}}')
        assert expiry > time.time()
        assert _metric(text, f'mailgate_imap_last_login_timestamp_seconds{{mailbox="{good}"}}') > 0


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


class TestCheckConfig:
    """check-config says exactly what failed: the endpoint's refusal, or the folder."""

    @pytest.fixture
    def config_extra(self, oauth_provider: OAuthProvider, box: OAuthMailbox, token_file: Path):
        authorized(oauth_provider, box, token_file)
        return box.toml(oauth_provider, token_file)

    def test_login_refusal_and_folder(self, app: App, oauth_provider, box, token_file):
        mailbox = app.config.imap.mailboxes[0]
        assert "login ok with OAuth2 (XOAUTH2)" in check_mailbox(mailbox, mailbox_tokens(mailbox))

        nowhere = dataclasses.replace(mailbox, folder="Nowhere")
        with pytest.raises(LookupError, match="'Nowhere' does not exist"):
            check_mailbox(nowhere, mailbox_tokens(nowhere))

        oauth_provider.revoke(box.email)
        with pytest.raises(Exception, match=r"refused .*invalid_grant") as caught:
            check_mailbox(mailbox, mailbox_tokens(mailbox))
        assert type(caught.value).__name__ == "TokenError"
