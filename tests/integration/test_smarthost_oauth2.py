"""The outbound smarthost with OAuth2 (issue 16): mailgate authenticates with AUTH XOAUTH2 to an
SMTP server (aiosmtpd) that accepts only a token the loopback provider issued, checked against
its /userinfo; when the token endpoint is down the mail waits in the outbox and goes once it
is back, never lost. The sender is driven one pass at a time on an App with a fixed clock."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from mailgate import config as config_mod
from mailgate.adapters.oauth_tokens import write_refresh_token
from mailgate.app import App, build
from mailgate.clock import FixedClock
from mailgate.services.ingest import Envelope
from tests.conftest import make_mail
from tests.support.mailflow import mail_bytes, outbox_rows
from tests.support.oauth_provider import Gate, XOAuth2Sink
from tests.support.peers import write_config

if TYPE_CHECKING:
    from tests.support.oauth_provider import OAuthProvider

pytest_plugins = ["tests.support.oauth_provider"]

SUPPORT = "support@example.com"
JEAN = "jean@client.example"


@pytest.fixture
def xsink(oauth_provider: OAuthProvider) -> Iterator[XOAuth2Sink]:
    s = XOAuth2Sink(oauth_provider)
    yield s
    s.close()


@pytest.fixture
def gate(oauth_provider: OAuthProvider) -> Iterator[Gate]:
    """The token endpoint, behind a relay the test can shut."""
    g = Gate(int(oauth_provider.issuer.rsplit(":", 1)[1]))
    yield g
    g.close()


@pytest.fixture
def account(oauth_provider: OAuthProvider, tmp_path: Path) -> tuple[str, Path]:
    """The smarthost account, authorized once: its refresh token in a 0600 file."""
    email = f"out-{uuid.uuid4().hex[:8]}@example.com"
    token_file = tmp_path / "oauth" / "outbound.refresh_token"
    write_refresh_token(token_file, oauth_provider.grant(email)["refresh_token"])
    return email, token_file


@pytest.fixture
def config_path(
    tmp_path: Path,
    database_url: str,
    xsink: XOAuth2Sink,
    gate: Gate,
    oauth_provider: OAuthProvider,
    account: tuple[str, Path],
) -> Path:
    email, token_file = account
    path = write_config(tmp_path, database_url=database_url, sink_port=xsink.port)
    keys = oauth_provider.oauth_toml(token_file, token_url=f"{gate.url}/oauth2/token")
    keys += f'username = "{email}"\n'
    path.write_text(path.read_text().replace("[outbound]\n", f"[outbound]\n{keys}", 1))
    return path


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


@pytest.fixture
def app(config_path: Path, clock: FixedClock) -> Iterator[App]:
    built = build(config_mod.load(config_path), clock=clock)
    built.db.upgrade()
    yield built
    built.sender.close()
    built.db.dispose()


def first_contact(app: App) -> None:
    raw = mail_bytes(make_mail(sender=JEAN))
    app.ingestor.ingest(raw, Envelope(mail_from=JEAN, recipients=(SUPPORT,)))


def test_mail_is_sent_through_the_oauth2_smarthost(
    app: App, xsink: XOAuth2Sink, account: tuple[str, Path]
):
    first_contact(app)

    assert app.sender.run_once() == 2  # the confirmation and the activation

    assert sorted(m.kind for m in xsink.wait_for(2)) == ["activation", "confirmation"]
    assert xsink.accepted and set(xsink.accepted) == {account[0]}
    assert xsink.refused == 0
    assert {r.status for r in outbox_rows(app.db)} == {"sent"}


def test_mail_waits_while_the_token_endpoint_is_down(
    app: App, xsink: XOAuth2Sink, gate: Gate, clock: FixedClock
):
    gate.shut()
    first_contact(app)

    app.sender.run_once()

    rows = outbox_rows(app.db)
    assert [(r.status, r.attempts) for r in rows] == [("queued", 1), ("queued", 1)]
    assert all("token endpoint" in r.last_error and "unreachable" in r.last_error for r in rows)
    assert xsink.messages == [] and xsink.accepted == []

    gate.open()
    clock.advance(hours=2)  # past the retry delay
    assert app.sender.run_once() == 2
    assert sorted(m.kind for m in xsink.wait_for(2)) == ["activation", "confirmation"]
    assert {r.status for r in outbox_rows(app.db)} == {"sent"}


def test_a_token_the_smarthost_refuses_is_renewed_once(
    app: App, xsink: XOAuth2Sink, oauth_provider: OAuthProvider, account: tuple[str, Path]
):
    first_contact(app)
    assert app.sender.run_once() == 2
    app.sender.close()  # the kept connections go: the next mail logs in again
    # The provider kills the token in hand; the operator authorizes again.
    email, token_file = account
    oauth_provider.revoke(email)
    write_refresh_token(token_file, oauth_provider.grant(email)["refresh_token"])
    first_contact(app)  # Jean again: a second ticket, its confirmation

    assert app.sender.run_once() == 1

    assert xsink.refused == 1  # the dead token, once; then a new one
    assert len(xsink.wait_for(3)) == 3
