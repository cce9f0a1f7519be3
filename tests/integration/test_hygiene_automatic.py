"""Issue 4, automatic mail (RFC 3834): every signal, sent over real SMTP, is kept but never
answered, never makes an account, never reopens a ticket and never resets its auto-resolve
clock; with no ticket to go to it is quarantined."""

from __future__ import annotations

import email
import email.policy
import json
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path

from mailgate.store.models import Account, Message, Outbox, Quarantine, Ticket
from tests.conftest import make_mail, send
from tests.support.hygiene import (
    Desk,
    addr,
    count,
    held,
    outbox_to,
    reply_to,
    rows,
    ticket,
    utc,
)
from tests.support.peers import Mailgate

AUTOMATIC = Path(__file__).resolve().parents[1] / "data" / "automatic"


@dataclass(frozen=True)
class Signal:
    name: str
    headers: dict[str, str] = field(default_factory=dict)
    mail_from: str | None = None  # the envelope sender; None: the From address
    subject: str | None = None


# One signal each: a human's reply but for this one thing.
SIGNALS = [
    Signal("auto-submitted", {"Auto-Submitted": "auto-replied"}),
    Signal("auto-generated", {"Auto-Submitted": "auto-generated"}),
    Signal("auto-submitted with a comment", {"Auto-Submitted": "auto-replied (vacation)"}),
    Signal("precedence bulk", {"Precedence": "bulk"}),
    Signal("precedence list", {"Precedence": "list"}),
    Signal("precedence junk", {"Precedence": "junk"}),
    Signal("list-id", {"List-Id": "Clients <clients.client.example>"}),
    Signal("list-unsubscribe", {"List-Unsubscribe": "<mailto:leave@client.example>"}),
    Signal("x-auto-response-suppress", {"X-Auto-Response-Suppress": "OOF"}),
    Signal("x-autoreply", {"X-Autoreply": "yes"}),
    Signal("x-autorespond", {"X-Autorespond": "vacation"}),
    Signal("null envelope sender", mail_from=""),
    Signal("return-path <>", {"Return-Path": "<>"}),
    Signal("outlook subject", subject="Automatic reply: Imprimante en panne"),
    Signal("outlook french subject", subject="Réponse automatique : Imprimante en panne"),
    Signal("out of office subject", subject="Out of Office: Imprimante en panne"),
    Signal("german subject", subject="Abwesenheitsnotiz: Imprimante en panne"),
]
# Autoresponders as they really write (headers, subjects, encodings), re-addressed.
SAMPLES = ["exchange_ooo_en.eml", "exchange_ooo_fr.eml", "gmail_vacation.eml", "zimbra_ooo.eml"]
ROLE_SENDERS = [
    "mailer-daemon@client.example",
    "postmaster@client.example",
    "noreply@client.example",
    "no-reply-billing@client.example",
    "newsletter-request@client.example",
    "owner-clients@client.example",
]


def _signalled(base: EmailMessage, signal: Signal) -> EmailMessage:
    if signal.subject is not None:
        del base["Subject"]
        base["Subject"] = signal.subject
    for k, v in signal.headers.items():
        base[k] = v
    return base


def _sample(name: str, sender: str, to: str, in_reply_to: str | None) -> EmailMessage:
    """A real autoresponder's mail, sent by `sender` to `to` in answer to `in_reply_to`."""
    msg = email.message_from_bytes((AUTOMATIC / name).read_bytes(), policy=email.policy.default)
    for header in ("From", "To", "Message-ID", "In-Reply-To", "References", "Return-Path"):
        del msg[header]
    msg["From"] = sender
    msg["To"] = to
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@client.example>"
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    return msg  # type: ignore[return-value]


def test_automatic_replies_stay_on_the_ticket_and_change_nothing(mailgate: Mailgate, desk: Desk):
    db = mailgate.app.db
    desk.add_agent()
    cases: list[tuple[str, EmailMessage, str | None]] = []
    pending = []
    for i, signal in enumerate(SIGNALS + [Signal(f"sample {s}") for s in SAMPLES]):
        p = desk.pending(f"Client {i} <client{i}@client.example>")
        if signal.name.startswith("sample "):
            msg = _sample(signal.name.removeprefix("sample "), p.customer,
                          str(p.agent_reply.msg["Reply-To"]), str(p.agent_reply.msg["Message-ID"]))
        else:
            msg = _signalled(reply_to(p.agent_reply, p.customer, "Je suis absent.\n"), signal)
        cases.append((signal.name, msg, signal.mail_from))
        pending.append(p)
    before = {p.ticket_id: ticket(db, p.ticket_id) for p in pending}
    outbox_before, accounts_before = count(db, Outbox), count(db, Account)

    for (name, msg, mail_from), p in zip(cases, pending, strict=True):
        rcpt = addr(str(p.agent_reply.msg["Reply-To"]))
        send(mailgate.smtp_port, msg, rcpts=[rcpt],
             mail_from=p.customer if mail_from is None else mail_from)
        mid = str(msg["Message-ID"]).strip("<>")
        stored = rows(db, Message, Message.message_id == mid)
        assert [(m.ticket_id, m.automatic) for m in stored] == [(p.ticket_id, True)], name
        now, then = ticket(db, p.ticket_id), before[p.ticket_id]
        assert now.status == "pending", f"{name} reopened the ticket"
        assert utc(now.pending_since) == utc(then.pending_since), f"{name} reset the clock"
        assert utc(now.last_exchange_at) == utc(then.last_exchange_at), name
        assert now.auto_resolve_paused is False, name

    assert count(db, Outbox) == outbox_before, "an automatic mail was answered"
    assert count(db, Account) == accounts_before
    # The auto-resolve clock kept running: a week after the agents' replies, all are solved.
    latest = max(utc(t.pending_since) for t in before.values())  # type: ignore[type-var]
    when = (latest + timedelta(days=7, minutes=1)).isoformat()  # type: ignore[operator]
    report = json.loads(mailgate.cli("jobs", "run", "--now", when, "--json").stdout)
    assert report["auto_resolved"] == len(pending)
    assert {ticket(db, p.ticket_id).status for p in pending} == {"solved"}


def test_automatic_mail_matching_no_ticket_is_quarantined_unanswered_and_makes_no_account(
    mailgate: Mailgate,
):
    db = mailgate.app.db
    cases: list[tuple[str, EmailMessage, str]] = []
    for i, signal in enumerate(SIGNALS):
        sender = f"stranger{i}@client.example"
        msg = _signalled(make_mail(sender=sender, subject="Imprimante en panne"), signal)
        cases.append((signal.name, msg, sender if signal.mail_from is None else signal.mail_from))
    for i, name in enumerate(SAMPLES):
        sender = f"absent{i}@client.example"
        cases.append((name, _sample(name, sender, "support@example.com", None), sender))
    for sender in ROLE_SENDERS:
        cases.append((sender, make_mail(sender=sender, subject="Your invoice"), sender))

    for name, msg, mail_from in cases:
        send(mailgate.smtp_port, msg, mail_from=mail_from)
        mid = str(msg["Message-ID"]).strip("<>")
        sender = addr(str(msg["From"]))
        quarantined = rows(db, Quarantine, Quarantine.message_id == mid)
        assert len(quarantined) == 1, f"{name} was not quarantined"
        assert "automatic" in quarantined[0].reason, (name, quarantined[0].reason)
        assert not account_of(db, sender), f"{name} created an account"
        assert outbox_to(db, sender) == [], f"{name} was answered"
    assert count(db, Ticket) == 0
    assert count(db, Outbox) == 0
    # The operator sees every one of them, with its reason, in the CLI.
    listed = json.loads(mailgate.cli("quarantine", "list", "--json").stdout)
    assert len(listed) == len(cases) == len(held(db))


def account_of(db, address: str) -> bool:  # type: ignore[no-untyped-def]
    return count(db, Account, Account.email == address) > 0


def test_an_agents_out_of_office_is_an_internal_note_and_sends_nothing(
    mailgate: Mailgate, desk: Desk
):
    db = mailgate.app.db
    desk.add_agent()
    ticket_id, _ = desk.open("Jean Dupont <jean@client.example>")
    notice = next(m for m in desk.sink.wait_kind("agent_notification"))
    outbox_before = count(db, Outbox)
    ooo = _sample("exchange_ooo_en.eml", "alice@helpdesk.example",
                  str(notice.msg["Reply-To"]), str(notice.msg["Message-ID"]))
    send(mailgate.smtp_port, ooo, rcpts=[addr(str(notice.msg["Reply-To"]))], mail_from="")
    stored = rows(db, Message, Message.message_id == str(ooo["Message-ID"]).strip("<>"))
    assert [(m.ticket_id, m.internal, m.role) for m in stored] == [(ticket_id, True, "agent")]
    assert ticket(db, ticket_id).status == "new"
    assert count(db, Outbox) == outbox_before
