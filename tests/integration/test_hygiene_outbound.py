"""Issue 4, what we send: every automatic mail has exactly one recipient, Auto-Submitted,
In-Reply-To/References to what triggered it, our loop header and the null envelope sender; and
no CR/LF a customer puts in a name or a subject can add a header or a recipient."""

from __future__ import annotations

import email
import email.policy
import re
import uuid
from email.utils import getaddresses
from pathlib import Path

from mailgate.clock import FixedClock
from mailgate.core.compose import AUTOMATIC_KINDS
from mailgate.store.models import Message, Outbox
from tests.conftest import make_mail, send
from tests.support.hygiene import (
    HOSTNAME,
    Desk,
    addr,
    kind_of,
    msgid,
    reply_to,
    rows,
    wait_drained,
)
from tests.support.peers import Mailgate, Received, SmtpSink

SENT_HEADERS = {
    "from", "to", "subject", "date", "message-id", "reply-to", "in-reply-to", "references",
    "x-mailgate-kind", "x-mailgate-ticket", "x-mailgate-loop", "auto-submitted",
    "x-auto-response-suppress", "content-language", "mime-version", "content-type",
    "content-transfer-encoding",
}


def _header_names(raw: bytes) -> list[str]:
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    return [line.split(":", 1)[0].lower() for line in head.split("\r\n") if line[:1] not in " \t"]


def test_every_automatic_mail_is_addressed_marked_and_threaded(config_path: Path, sink: SmtpSink):
    clock = FixedClock()
    mg = Mailgate(config_path, clock=clock)
    try:
        desk = Desk(mg, sink)
        desk.add_agent()
        customer = "jean@client.example"
        ticket_id, _ = desk.open(f"Jean Dupont <{customer}>")  # confirmation, activation, notice
        notice = next(m for m in sink.wait_for(3) if kind_of(m) == "agent_notification")
        bad = reply_to(notice, "alice@helpdesk.example", "#status nowhere\n")
        send(mg.smtp_port, bad, rcpts=[addr(str(notice.msg["Reply-To"]))],
             mail_from="alice@helpdesk.example")  # an unknown status: command_error
        desk.answer(ticket_id)  # the ticket waits on the customer
        clock.advance(days=8)
        mg.app.jobs.run_all(clock.now())  # auto_resolved
        clock.advance(days=29)
        mg.app.jobs.run_all(clock.now())  # closed
        resolved = sink.wait_for(lambda ms: any(kind_of(m) == "auto_resolved" for m in ms))
        late = reply_to(next(m for m in resolved if kind_of(m) == "auto_resolved"), customer,
                        "Finalement ça ne marche toujours pas.\n")
        send(mg.smtp_port, late, mail_from=customer)  # a closed ticket: follow_up
        for i in range(12):  # enough, 20 minutes apart, to reach the day's cap and its notice
            send(mg.smtp_port, make_mail(sender=customer, subject=f"Encore {i}"),
                 mail_from=customer)
            clock.advance(minutes=20)
        wait_drained(mg)

        known = {m.message_id for m in rows(mg.app.db, Message)}
        known |= {o.message_id for o in rows(mg.app.db, Outbox)}
        automatic = [m for m in sink.messages if kind_of(m) in AUTOMATIC_KINDS]
        kinds = {kind_of(m) for m in automatic}
        assert kinds >= {"confirmation", "activation", "agent_notification", "command_error",
                         "auto_resolved", "follow_up", "limit_reached"}, kinds
        for m in automatic:
            _assert_automatic(m, known)
    finally:
        mg.stop()


def _assert_automatic(m: Received, known: set[str]) -> None:
    kind, msg = kind_of(m), m.msg
    assert m.mail_from == "<>", f"{kind}: envelope sender {m.mail_from!r}"  # MAIL FROM:<>
    assert len(m.rcpt_tos) == 1, kind
    assert [a for _, a in getaddresses([str(v) for v in msg.get_all("To", [])])] == m.rcpt_tos
    assert not msg.get_all("Cc") and not msg.get_all("Bcc"), kind
    assert msg["Auto-Submitted"] in ("auto-replied", "auto-generated"), kind
    assert msg["X-Mailgate-Loop"] == HOSTNAME, kind
    trigger = msgid(msg["In-Reply-To"])
    assert trigger in known, f"{kind}: In-Reply-To {trigger!r} is nothing we know"
    assert f"<{trigger}>" in str(msg["References"]).split(), kind
    assert set(_header_names(m.raw)) <= SENT_HEADERS, kind


def test_cr_lf_in_a_name_or_subject_cannot_add_a_header_or_a_recipient(
    mailgate: Mailgate, sink: SmtpSink
):
    # Encoded words decode to CR/LF: the classic header-injection attempt, through the real path.
    raw = (
        "From: =?utf-8?q?Eve=0D=0ABcc=3A_victim=40evil=2Eexample=0D=0AX-Injected=3A_1?= "
        "<eve@client.example>\r\n"
        "To: support@example.com\r\n"
        "Subject: =?utf-8?q?Aide=0D=0ABcc=3A_victim2=40evil=2Eexample=0D=0A=0D=0Abody?=\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@client.example>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nBonjour\r\n"
    ).encode()
    send(mailgate.smtp_port, raw, mail_from="eve@client.example")
    wait_drained(mailgate)
    to_eve = [m for m in sink.messages if "eve@client.example" in m.rcpt_tos]
    assert sorted(kind_of(m) for m in to_eve) == ["activation", "confirmation"]
    assert not [m for m in sink.messages if any("evil" in r for r in m.rcpt_tos)]
    for m in to_eve:
        assert m.rcpt_tos == ["eve@client.example"]
        assert set(_header_names(m.raw)) <= SENT_HEADERS, _header_names(m.raw)
        parsed = email.message_from_bytes(m.raw, policy=email.policy.default)
        assert [a for _, a in getaddresses([str(parsed["To"])])] == ["eve@client.example"]
        for name in ("To", "Subject"):
            assert not re.search(r"[\r\n]", str(parsed[name])), (name, str(parsed[name]))
