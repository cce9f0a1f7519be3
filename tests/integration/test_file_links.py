"""Issue 12: a customer's file too big to ride in the agent's notification is a signed link
there, served over real HTTP by `serve` without a session; a forged, altered or expired link
gets nothing, and says nothing about why."""

from __future__ import annotations

import dataclasses

import pytest

from mailgate.clock import FixedClock
from tests.support.conversation import AGENT, CUSTOMER, Desk
from tests.support.peers import Mailgate
from tests.support.portal_web import Web

pytest_plugins = ["tests.support.portal"]

PICTURE = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 60  # ~15 KB


@pytest.fixture
def config_extra() -> str:
    return ""


def test_a_big_file_is_a_signed_link_that_serves_it(
    portal: Mailgate, helpdesk: Desk, web: Web, portal_clock: FixedClock
):
    mailer = portal.app.mailer
    mailer.settings = dataclasses.replace(mailer.settings, notification_attachment_bytes=1000)
    helpdesk.add_agent()
    msg = helpdesk.mail(CUSTOMER, "support@example.com", "Écran", "Voici une capture.\n")
    msg.add_attachment(PICTURE, maintype="image", subtype="png", filename="capture écran.png")
    helpdesk.send(msg)
    note = helpdesk.wait_mail("agent_notification", AGENT)
    assert list(note.msg.iter_attachments()) == []  # over the limit: not attached
    line = next(x for x in note.text().splitlines() if "capture écran.png" in x)
    url = line.split(" : ")[-1].strip()
    path = url.removeprefix(portal.config.portal.base_url)
    assert path.startswith("/files/")

    got = web.get(path)  # no session: the link is the credential
    assert got.status_code == 200 and got.content == PICTURE
    assert got.headers["content-type"] == "application/octet-stream"
    assert got.headers["content-disposition"].startswith("attachment;")
    assert "sandbox" in got.headers["content-security-policy"]

    token = path.rsplit("/", 1)[1]
    for bad in (token[:-3] + "AAA", token + "x", "1.2.3", "x" * 500):
        refused = web.get(f"/files/{bad}")
        assert refused.status_code == 404 and PICTURE not in refused.content
    portal_clock.advance(days=31)  # the link has expired
    assert web.get(path).status_code == 404
