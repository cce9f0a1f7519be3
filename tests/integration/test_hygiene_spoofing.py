"""Issue 4, spoofing: Authentication-Results is read only from our MTA (its authserv-id in
config, the topmost copy); with require_dmarc_for_threading, a mail whose DMARC failed may open
a ticket but never threads into one, never acts as an agent and is sent nothing. A third-party
service's sign-up or verification mail is quarantined, not acknowledged."""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path

import pytest

from mailgate.store.models import Account, Message, Outbox, Quarantine, Ticket
from tests.conftest import make_mail, send
from tests.support.hygiene import (
    Desk,
    addr,
    count,
    crlf,
    kind_of,
    msgid,
    outbox_to,
    reply_to,
    rows,
    smtp_data,
    ticket,
)
from tests.support.peers import Mailgate, Received, SmtpSink

MTA = "mx.example.com"
CUSTOMER = "jean@client.example"
FAIL = f"{MTA}; spf=fail smtp.mailfrom=client.example; dmarc=fail (p=reject) header.from=x"
PASS = f"{MTA}; spf=pass smtp.mailfrom=client.example; dmarc=pass header.from=client.example"


@pytest.fixture
def config_extra() -> str:
    return f'[security]\nauthserv_id = "{MTA}"\nrequire_dmarc_for_threading = true\n'


def _stamped(msg: EmailMessage, *results: str) -> bytes:
    """The mail as our MTA passes it on: its Authentication-Results on top, newest first."""
    return b"".join(f"Authentication-Results: {r}\r\n".encode() for r in results) + crlf(
        msg.as_bytes()
    )


def _confirmation(sink: SmtpSink) -> Received:
    return next(m for m in sink.wait_for(2) if kind_of(m) == "confirmation")


def _reply(confirmation: Received, body: str = "Toujours en panne.\n") -> EmailMessage:
    return reply_to(confirmation, f"Jean Dupont <{CUSTOMER}>", body)


def _to(confirmation: Received) -> list[str]:
    return [addr(str(confirmation.msg["Reply-To"]))]


def test_a_dmarc_failed_reply_opens_its_own_ticket_and_gets_nothing(
    mailgate: Mailgate, desk: Desk, sink: SmtpSink
):
    db = mailgate.app.db
    ticket_id, _ = desk.open(f"Jean Dupont <{CUSTOMER}>")
    confirmation = _confirmation(sink)
    outbox = count(db, Outbox)
    # Token address, In-Reply-To, References and [#ID] all point at the ticket: none counts.
    spoofed = _reply(confirmation, "Merci de fermer ce ticket.\n")
    assert smtp_data(mailgate.smtp_port, _stamped(spoofed, FAIL), _to(confirmation))[0] == 250
    assert count(db, Message, Message.ticket_id == ticket_id) == 1  # the first mail only
    (own,) = rows(db, Message, Message.message_id == msgid(spoofed["Message-ID"]))
    assert own.ticket_id != ticket_id and own.matched_by == "new"
    assert count(db, Outbox) == outbox, "a DMARC-failed mail was answered"
    # The same reply with DMARC passing threads as usual.
    genuine = _reply(confirmation)
    assert smtp_data(mailgate.smtp_port, _stamped(genuine, PASS), _to(confirmation))[0] == 250
    (threaded,) = rows(db, Message, Message.message_id == msgid(genuine["Message-ID"]))
    assert threaded.ticket_id == ticket_id


def test_a_dmarc_failed_mail_from_an_agent_never_acts_as_the_agent(
    mailgate: Mailgate, desk: Desk, sink: SmtpSink
):
    db = mailgate.app.db
    desk.add_agent()
    ticket_id, _ = desk.open(f"Jean Dupont <{CUSTOMER}>")
    notice = next(m for m in sink.wait_for(3) if kind_of(m) == "agent_notification")
    outbox = count(db, Outbox)
    forged = reply_to(notice, "Alice Martin <alice@helpdesk.example>",
                      "#status solved\nC'est réglé, merci.\n")
    raw = _stamped(forged, FAIL)
    assert smtp_data(mailgate.smtp_port, raw, _to(notice), "alice@helpdesk.example")[0] == 250
    assert ticket(db, ticket_id).status == "new"
    assert count(db, Outbox) == outbox  # no reply reached the customer
    (own,) = rows(db, Message, Message.message_id == msgid(forged["Message-ID"]))
    assert own.ticket_id != ticket_id and own.role == "customer"


def test_only_the_topmost_results_of_our_own_mta_are_believed(
    mailgate: Mailgate, desk: Desk, sink: SmtpSink
):
    db = mailgate.app.db
    ticket_id, _ = desk.open(f"Jean Dupont <{CUSTOMER}>")
    confirmation = _confirmation(sink)
    # A verdict from somebody else's server is nobody's word: it threads.
    other = _reply(confirmation)
    raw = _stamped(other, "mx.elsewhere.example; dmarc=fail header.from=client.example")
    assert smtp_data(mailgate.smtp_port, raw, _to(confirmation))[0] == 250
    assert rows(db, Message, Message.message_id == msgid(other["Message-ID"]))[0].ticket_id \
        == ticket_id
    # A sender's own copy claiming our MTA's pass sits below our MTA's real verdict.
    forged = _reply(confirmation)
    assert smtp_data(mailgate.smtp_port, _stamped(forged, FAIL, PASS), _to(confirmation))[0] \
        == 250
    assert rows(db, Message, Message.message_id == msgid(forged["Message-ID"]))[0].ticket_id \
        != ticket_id


def test_without_the_option_dmarc_does_not_change_threading(config_path: Path, sink: SmtpSink):
    text = config_path.read_text().replace("require_dmarc_for_threading = true",
                                           "require_dmarc_for_threading = false")
    config_path.write_text(text)
    mg = Mailgate(config_path)
    try:
        ticket_id, _ = Desk(mg, sink).open(f"Jean Dupont <{CUSTOMER}>")
        confirmation = _confirmation(sink)
        failed = _reply(confirmation)
        assert smtp_data(mg.smtp_port, _stamped(failed, FAIL), _to(confirmation))[0] == 250
        (threaded,) = rows(mg.app.db, Message, Message.message_id == msgid(failed["Message-ID"]))
        assert threaded.ticket_id == ticket_id
    finally:
        mg.stop()


SIGN_UPS = [
    ("verify@accounts.service.example", "Your verification code",
     "Hello,\n\nYour verification code is 482913. It expires in 10 minutes.\n"),
    ("noreply@shop.example", "Confirm your email address",
     "Welcome!\nPlease confirm your email address: https://shop.example/confirm?t=8f3a\n"),
    ("no-reply@banque.example", "Code de vérification",
     "Bonjour,\nVotre code de vérification : 731 204\n"),
    ("account-security@cloud.example", "Activez votre compte",
     "Merci de votre inscription. Activez votre compte : https://cloud.example/a/91bd\n"),
]


def test_third_party_sign_up_mail_is_quarantined_and_not_acknowledged(mailgate: Mailgate):
    db = mailgate.app.db
    for sender, subject, body in SIGN_UPS:
        msg = make_mail(sender=f"Service <{sender}>", subject=subject, body=body)
        send(mailgate.smtp_port, msg, mail_from=sender)
        (item,) = rows(db, Quarantine, Quarantine.message_id == msgid(msg["Message-ID"]))
        assert "third-party" in item.reason, (sender, item.reason)
        assert outbox_to(db, sender) == [] and count(db, Account, Account.email == sender) == 0
    assert count(db, Ticket) == 0
    # A person writing about a code, or a sign-up, is a customer like any other.
    person = make_mail(subject="Confirm your email address",
                       body="My verification code is 482913 and the link https://x.example fails.")
    send(mailgate.smtp_port, person)
    assert count(db, Ticket) == 1 and outbox_to(db, CUSTOMER) != []
