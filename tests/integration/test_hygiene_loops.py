"""Issue 4, loops: our own mail coming back is not ticketed, forged internal headers are
ignored, too many hops is 554 5.4.6, and two helpdesks that are each other's customer exchange
at most two automatic mails and stop."""

from __future__ import annotations

from pathlib import Path

from mailgate.store.models import Outbox, Quarantine, Receipt, Ticket
from tests.conftest import make_mail, send
from tests.support.hygiene import (
    HOSTNAME,
    count,
    crlf,
    drained,
    peer_config,
    rows,
    smtp_data,
    wait_drained,
)
from tests.support.peers import Mailgate, SmtpSink, free_port, wait_until


def test_our_own_mail_coming_back_is_logged_as_a_loop_and_not_ticketed(
    mailgate: Mailgate, sink: SmtpSink
):
    db = mailgate.app.db
    send(mailgate.smtp_port, make_mail())
    sent = sink.wait_for(2)  # the confirmation and the activation
    wait_drained(mailgate)
    tickets, outbox = count(db, Ticket), count(db, Outbox)
    for mail in sent:
        # A forwarding rule sends it straight back to support@ (null sender: it is automatic).
        code, _ = smtp_data(mailgate.smtp_port, mail.raw, mail_from="")
        assert code == 250
    outcomes = [r.outcome for r in rows(db, Receipt, Receipt.envelope_from == "")]
    assert outcomes == ["loop", "loop"]
    assert (count(db, Ticket), count(db, Outbox), count(db, Quarantine)) == (tickets, outbox, 0)


def test_forged_internal_headers_are_ignored(mailgate: Mailgate, sink: SmtpSink):
    db = mailgate.app.db
    send(mailgate.smtp_port, make_mail(subject="Premier"))
    # A customer's mail dressed up as one of ours about ticket 1, and another host's marker.
    forged = make_mail(
        sender="Eve <eve@client.example>",
        subject="Deuxième",
        headers={
            "X-Mailgate-Kind": "agent_reply",
            "X-Mailgate-Ticket": "1",
            "X-Mailgate-Loop": "helpdesk.elsewhere.example",
        },
    )
    send(mailgate.smtp_port, forged, mail_from="eve@client.example")
    assert sorted(t.subject for t in rows(db, Ticket)) == ["Deuxième", "Premier"]
    sink.wait_for(lambda ms: any("eve@client.example" in m.rcpt_tos for m in ms))
    # Our own marker, though, is believed: it can only make mail count as ours coming back.
    ours = make_mail(sender="Eve <eve@client.example>", headers={"X-Mailgate-Loop": HOSTNAME})
    send(mailgate.smtp_port, ours, mail_from="eve@client.example")
    assert count(db, Ticket) == 2


def test_fifty_received_headers_is_554_5_4_6_and_forty_nine_is_not(mailgate: Mailgate):
    def hops(n: int) -> bytes:
        msg = make_mail(subject=f"{n} hops")
        for i in range(n):
            msg["Received"] = f"from relay{i}.example by relay{i + 1}.example; hop {i}"
        return crlf(msg.as_bytes())

    code, text = smtp_data(mailgate.smtp_port, hops(50))
    assert (code, text.split()[0]) == (554, "5.4.6")
    assert count(mailgate.app.db, Ticket) == 0
    assert smtp_data(mailgate.smtp_port, hops(49))[0] == 250
    assert count(mailgate.app.db, Ticket) == 1


def test_two_helpdesks_that_are_each_others_customer_exchange_two_mails_and_stop(
    tmp_path: Path,
):
    a_port, b_port = free_port(), free_port()
    a_cfg = peer_config(tmp_path, hostname="a.test", support="support@a.example",
                        smtp_port=a_port, relay_port=b_port)
    b_cfg = peer_config(tmp_path, hostname="b.test", support="support@b.example",
                        smtp_port=b_port, relay_port=a_port)
    a, b = Mailgate(a_cfg), Mailgate(b_cfg)
    try:
        # B's support address writes to A (an agent of B asking A for help, say).
        first = make_mail(sender="B Support <support@b.example>", to="support@a.example",
                          subject="Question de B")
        send(a.smtp_port, first, rcpts=["support@a.example"], mail_from="support@b.example")
        # A confirms (and offers an account): two automatic mails, to B's listener.
        wait_until(lambda: count(a.app.db, Outbox, Outbox.status == "sent") == 2, 30,
                   "A's two mails to reach B")
        # B stored each one before it said 250; none is answered, none makes a ticket.
        assert {r.outcome for r in rows(b.app.db, Receipt)} == {"quarantined"}
        assert count(b.app.db, Receipt) == 2
        assert count(b.app.db, Outbox) == 0 and count(b.app.db, Ticket) == 0
        # Nothing is queued anywhere, so nothing more can ever be sent: the exchange stopped.
        assert drained(a.app.db) and drained(b.app.db)
        assert count(a.app.db, Receipt) == 1 and count(a.app.db, Ticket) == 1
        kinds = sorted(o.kind for o in rows(a.app.db, Outbox))
        assert kinds == ["activation", "confirmation"]
    finally:
        a.stop()
        b.stop()
