"""Issue 4, bounces: a permanent DSN about one of our mails marks its outbox row failed, puts
an internal note on the ticket, stops its auto-resolve clock and silences automatic mail to
the address for 60 days; a temporary one is only logged; a bounce is never answered and never
makes a ticket; a DSN about a mail we never sent silences nobody."""

from __future__ import annotations

import json
from datetime import timedelta

from mailgate.store.models import Message, Outbox, Quarantine, Suppression, Ticket
from tests.conftest import make_mail, send
from tests.support.hygiene import (
    Desk,
    LogRecorder,
    count,
    crlf,
    dsn,
    kind_of,
    msgid,
    outbox_to,
    rows,
    smtp_data,
    ticket,
    utc,
    wait_drained,
)
from tests.support.peers import Mailgate, Received, SmtpSink

CUSTOMER = "jean@client.example"


def _row_of(mailgate: Mailgate, message_id: str) -> Outbox:
    (row,) = rows(mailgate.app.db, Outbox, Outbox.message_id == message_id)
    return row


def test_a_hard_bounce_of_an_agent_reply_fails_it_notes_it_pauses_and_suppresses(
    mailgate: Mailgate, desk: Desk, sink: SmtpSink
):
    db = mailgate.app.db
    desk.add_agent()
    pending = desk.pending(f"Jean Dupont <{CUSTOMER}>")
    wait_drained(mailgate)
    reply_id = msgid(pending.agent_reply.msg["Message-ID"])
    assert _row_of(mailgate, reply_id).status == "sent"
    tickets, outbox, sunk = count(db, Ticket), count(db, Outbox), len(sink.messages)

    code, _ = smtp_data(mailgate.smtp_port, dsn(pending.agent_reply, CUSTOMER, "5.1.1"),
                        mail_from="")
    assert code == 250
    row = _row_of(mailgate, reply_id)
    assert (row.status, "5.1.1" in row.last_error) == ("failed", True)
    notes = [m for m in rows(db, Message, Message.ticket_id == pending.ticket_id) if m.internal]
    assert [(n.role, n.body_text.startswith(f"Your reply did not reach {CUSTOMER}: 5.1.1"))
            for n in notes] == [("system", True)]
    # Never a ticket, never an answer, nothing held for an operator.
    assert (count(db, Ticket), count(db, Outbox), count(db, Quarantine)) == (tickets, outbox, 0)
    # The customer never saw the reply: the ticket must not be "solved" behind their back.
    t = ticket(db, pending.ticket_id)
    assert (t.status, t.auto_resolve_paused) == ("pending", True)
    week = (utc(t.pending_since) + timedelta(days=8)).isoformat()  # type: ignore[operator]
    report = json.loads(mailgate.cli("jobs", "run", "--now", week, "--json").stdout)
    assert report["auto_resolved"] == 0
    # Automatic mail to the address stops for 60 days; agents still hear of new mail.
    (suppressed,) = rows(db, Suppression, Suppression.email == CUSTOMER)
    assert timedelta(days=59) < utc(suppressed.until) - utc(row.created_at) <= timedelta(days=61)  # type: ignore[operator]
    before = len(outbox_to(db, CUSTOMER))
    send(mailgate.smtp_port, make_mail(sender=CUSTOMER, subject="Autre chose"),
         mail_from=CUSTOMER)
    assert count(db, Ticket) == tickets + 1
    # Issue 9: the confirmation not sent is recorded, with its reason, and never goes out.
    (unsent,) = outbox_to(db, CUSTOMER)[before:]
    assert (unsent.kind, unsent.status, unsent.attempts, unsent.raw) == (
        "confirmation", "failed", 0, b"")
    assert unsent.reason.startswith("suppressed: bounced 5.1.1")
    wait_drained(mailgate)
    new = sink.messages[sunk:]
    assert [kind_of(m) for m in new] == ["agent_notification"]


def test_a_temporary_bounce_is_only_logged(
    mailgate: Mailgate, desk: Desk, sink: SmtpSink, mailgate_log: LogRecorder
):
    db = mailgate.app.db
    desk.add_agent()
    pending = desk.pending(f"Jean Dupont <{CUSTOMER}>")
    wait_drained(mailgate)
    reply_id = msgid(pending.agent_reply.msg["Message-ID"])
    before = (count(db, Ticket), count(db, Outbox), count(db, Message), count(db, Suppression))

    delayed = dsn(pending.agent_reply, CUSTOMER, "4.4.7", action="delayed")
    assert smtp_data(mailgate.smtp_port, delayed, mail_from="")[0] == 250
    assert [f["to"] for f in mailgate_log.named("bounce.temporary")] == [CUSTOMER]
    assert _row_of(mailgate, reply_id).status == "sent"
    assert (count(db, Ticket), count(db, Outbox), count(db, Message), count(db, Suppression)) \
        == before
    assert ticket(db, pending.ticket_id).auto_resolve_paused is False


def test_a_dsn_about_a_mail_we_never_sent_silences_nobody(
    mailgate: Mailgate, desk: Desk, sink: SmtpSink, mailgate_log: LogRecorder
):
    db = mailgate.app.db
    desk.open(f"Jean Dupont <{CUSTOMER}>")
    sink.wait_for(2)
    # Someone forges a bounce naming the customer, about a Message-ID they made up.
    made_up = crlf(make_mail(sender="support@example.com", to=CUSTOMER).as_bytes())
    forged = dsn(Received("", [CUSTOMER], made_up), CUSTOMER, "5.1.1")
    assert smtp_data(mailgate.smtp_port, forged, mail_from="")[0] == 250
    assert [f["to"] for f in mailgate_log.named("bounce.unmatched")] == [CUSTOMER]
    assert count(db, Suppression) == 0
    send(mailgate.smtp_port, make_mail(sender=CUSTOMER, subject="Encore"), mail_from=CUSTOMER)
    assert [o.kind for o in outbox_to(db, CUSTOMER)].count("confirmation") == 2

