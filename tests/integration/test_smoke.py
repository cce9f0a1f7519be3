"""The first user story end to end: a stranger's mail becomes a ticket, an account and two mails."""

from __future__ import annotations

import json

from tests.conftest import make_mail, send
from tests.support.peers import Mailgate, SmtpSink


def test_first_mail_creates_ticket_account_and_two_mails(mailgate: Mailgate, sink: SmtpSink):
    send(mailgate.smtp_port, make_mail())
    tickets = json.loads(mailgate.cli("ticket", "list", "--json").stdout)
    assert [t["requester"] for t in tickets] == ["jean@client.example"]
    assert tickets[0]["status"] == "new"
    kinds = sorted(m.kind for m in sink.wait_for(2))
    assert kinds == ["activation", "confirmation"]
