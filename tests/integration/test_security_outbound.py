"""Issue 9, outbound limits that never silently drop what a person asked for: a global cap on
mail to never-heard-from addresses (excess waits, it is not dropped), no echo of a stranger's
text, requested mail never blocked by the RFC 3834 caps, every mail not sent recorded with its
reason, and agent notifications gathered into digests beyond an hourly cap.

Mail comes in over the real SMTP listener and goes out to the real SMTP sink; time moves with a
FixedClock the serving instance shares."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest

from mailgate.clock import FixedClock, as_utc
from mailgate.core.compose import AUTOMATIC_KINDS
from mailgate.services.outbound_limits import SENDABLE, not_sent
from mailgate.services.tickets import Incoming
from mailgate.store.models import Account, Outbox, Ticket
from tests.conftest import make_mail, send
from tests.support.hygiene import count, crlf, kind_of, outbox_to, rows, smtp_data
from tests.support.peers import Mailgate, Received, SmtpSink, wait_until

pytestmark = pytest.mark.postgres  # the database engine matters here: run on both

MTA = "mx.example.com"
PASS = f"{MTA}; spf=pass smtp.mailfrom=client.example; dmarc=pass header.from=client.example"
AGENTS = ("alice@helpdesk.example", "bob@helpdesk.example")


@pytest.fixture
def config_extra() -> str:
    # Our MTA's Authentication-Results are trusted: a dmarc=pass makes a verified sender.
    return f'[security]\nauthserv_id = "{MTA}"\n'


def _set_outbound(config_path: Path, **keys: int) -> None:
    text = config_path.read_text()
    lines = "".join(f"{k} = {v}\n" for k, v in keys.items())
    config_path.write_text(text.replace("[outbound]\n", f"[outbound]\n{lines}", 1))


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()  # 2026-01-05 09:00 UTC


@pytest.fixture
def served(config_path: Path, clock: FixedClock) -> Iterator[Mailgate]:
    _set_outbound(config_path, first_contact_per_hour=6, agent_notifications_per_hour=5)
    mg = Mailgate(config_path, clock=clock)
    yield mg
    mg.stop()


def _mail(sender: str, subject: str = "Imprimante en panne", **headers: str) -> EmailMessage:
    return make_mail(sender=sender, subject=subject, headers=headers or None)


def _send(mg: Mailgate, msg: EmailMessage, stamp: str | None = None) -> None:
    raw = crlf(msg.as_bytes())
    if stamp:  # as our MTA passes it on: its verdict on top
        raw = f"Authentication-Results: {stamp}\r\n".encode() + raw
    mail_from = str(msg["From"]).rsplit("<", 1)[-1].rstrip(">")
    assert smtp_data(mg.smtp_port, raw, mail_from=mail_from)[0] == 250


def _settled(mg: Mailgate, now: datetime) -> bool:
    """Nothing due now is left for the sender (rows waiting for later do not count)."""
    return count(
        mg.app.db, Outbox, Outbox.status == "queued", Outbox.next_attempt_at <= now, SENDABLE,
    ) == 0  # fmt: skip


def _wait_settled(mg: Mailgate, clock: FixedClock) -> None:
    wait_until(lambda: _settled(mg, clock.now()), 30, "the due outbox rows to be sent")


def _outbox_list(mg: Mailgate) -> list[dict[str, object]]:
    return json.loads(mg.cli("outbox", "list", "--json").stdout)


def _metric(mg: Mailgate, name: str, reason: str) -> float:
    text = mg.app.metrics.render()[0].decode()
    found = re.search(rf'^{name}{{reason="{reason}"}} (\S+)$', text, re.M)
    assert found, f"{name}{{reason={reason}}} not in /metrics"
    return float(found.group(1))


def _html(m: Received) -> str:
    part = m.msg.get_body(("html",))
    assert part is not None
    return str(part.get_content())


# -- 1. first contact: a global hourly cap; the excess waits ----------------------------------


def test_first_contact_over_the_cap_waits_for_the_window_and_is_never_dropped(
    served: Mailgate, sink: SmtpSink, clock: FixedClock
):
    mg, db = served, served.app.db
    strangers = [f"new{i}@client.example" for i in range(4)]
    for who in strangers:  # each: a confirmation and an activation, both first contact
        _send(mg, _mail(who))
    _wait_settled(mg, clock)
    first = rows(db, Outbox, Outbox.first_contact.is_(True))  # type: ignore[attr-defined]
    assert len(first) == 8
    assert [o.status for o in first] == ["sent"] * 6 + ["queued"] * 2
    waiting = first[6:]
    for o in waiting:
        assert o.to_addr == strangers[3]
        assert as_utc(o.next_attempt_at) == datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
        assert o.reason == "first-contact cap: waits until 10:00 UTC"
    assert len(sink.messages) == 6
    listed = {r["id"]: r for r in _outbox_list(mg)}
    assert {listed[o.id]["reason"] for o in waiting} == {o.reason for o in waiting}
    assert {listed[o.id]["status"] for o in waiting} == {"queued"}
    assert _metric(mg, "mailgate_outbox_delayed", "first_contact") == 2

    # A customer we know is not a first contact: answered at once, cap or not.
    _send(mg, _mail(strangers[0], "Encore moi"))
    sink.wait_for(lambda ms: sum(m.rcpt_tos == [strangers[0]] for m in ms) == 3)
    assert len(sink.messages) == 7

    clock.advance(hours=1)  # the window frees up: the sender picks the waiting mail up
    late = [m for m in sink.wait_for(9) if m.rcpt_tos == [strangers[3]]]
    assert sorted(kind_of(m) for m in late) == ["activation", "confirmation"]
    for m in late:
        assert parsedate_to_datetime(str(m.msg["Date"])) == datetime(2026, 1, 5, 10, tzinfo=UTC)
    _wait_settled(mg, clock)
    assert [o.status for o in outbox_to(db, strangers[3])] == ["sent", "sent"]
    assert _metric(mg, "mailgate_outbox_delayed", "first_contact") == 0


# -- 2. no echo of a stranger's text ----------------------------------------------------------


SPAM = "Cheap pills at pills.example"
NAME = "Visit pills.example"


def test_a_stranger_gets_no_echo_of_name_or_subject_unless_verified(
    served: Mailgate, sink: SmtpSink
):
    for who, lang in (("fr@client.example", {}), ("en@client.example", {"Content-Language": "en"})):
        _send(served, _mail(f"{NAME} <{who}>", SPAM, **lang))
        mails = sink.wait_kind("confirmation", to=who) + sink.wait_kind("activation", to=who)
        ticket_id = int(str(mails[0].msg["X-Mailgate-Ticket"]))
        for m in mails:
            shown = "\n".join([str(m.msg["Subject"]), str(m.msg["To"]), m.text(), _html(m)])
            assert "pills" not in shown.lower(), (kind_of(m), shown)
            (to,) = m.msg["To"].addresses
            assert (to.display_name, to.addr_spec) == ("", who)
        conf = mails[0]
        assert f"#{ticket_id}" in str(conf.msg["Subject"]) and f"#{ticket_id}" in conf.text()
        assert f"/tickets/{ticket_id}" in conf.text() and f"/tickets/{ticket_id}" in _html(conf)
    assert "has been received" in sink.of_kind("confirmation", "en@client.example")[0].text()
    assert "a bien été reçue" in sink.of_kind("confirmation", "fr@client.example")[0].text()

    # Once we know the address, the customer gets today's text back.
    _send(served, _mail(f"{NAME} <fr@client.example>", "Toujours en panne"))
    again = sink.wait_kind("confirmation", to="fr@client.example", count=2)[-1]
    assert "Toujours en panne" in str(again.msg["Subject"]) and NAME in again.text()

    # A stranger whose address our MTA verified (DMARC pass) keeps the personal text.
    who = "jean@client.example"
    _send(served, _mail(f"Jean Dupont <{who}>", "Wi-Fi coupé"), stamp=PASS)
    conf = sink.wait_kind("confirmation", to=who)[0]
    act = sink.wait_kind("activation", to=who)[0]
    assert "Wi-Fi coupé" in str(conf.msg["Subject"]) and "Wi-Fi coupé" in conf.text()
    for m in (conf, act):
        assert m.msg["To"].addresses[0].display_name == "Jean Dupont"
        assert "Bonjour Jean Dupont" in m.text()


# -- 3 and 4. requested mail is never capped; what is not sent is recorded --------------------


def _fill_cap(mg: Mailgate, who: str, n: int = 12) -> None:
    """Forged mail in the customer's name: enough to fill the hour's auto-reply cap."""
    for i in range(n):
        send(mg.smtp_port, make_mail(sender=who, subject=f"Forged {i}"), mail_from=who)


def test_mail_forged_to_fill_the_cap_cannot_block_a_password_reset(
    served: Mailgate, sink: SmtpSink, clock: FixedClock
):
    mg, db, who = served, served.app.db, "victim@client.example"
    _fill_cap(mg, who)
    _wait_settled(mg, clock)
    assert len(sink.of_kind("confirmation", who)) == 4  # 4 + the activation: 5 an hour
    with db.write() as session:
        account = mg.app.accounts.find(session, who)
        assert account is not None
        # An automatic reset (not asked for) is capped, as before: recorded, not sent...
        unasked = mg.app.accounts.queue_reset(session, account)
        # ... but the one the person asked for in the portal just now is queued.
        asked = mg.app.accounts.queue_reset(session, account, requested=True)
        resend = mg.app.accounts.queue_activation(session, account, requested=True)
    unasked_id, asked_id, resend_id = unasked.id, asked.id, resend.id  # set by the commit
    got = sink.wait_kind("password_reset", to=who)
    assert len(got) == 1 and "/password/reset/" in got[0].text()
    sink.wait_kind("activation", to=who, count=2)
    _wait_settled(mg, clock)
    by_id = {o.id: o for o in outbox_to(db, who)}
    assert by_id[asked_id].status == "sent" and by_id[resend_id].status == "sent"
    assert (by_id[unasked_id].status, by_id[unasked_id].reason) == (
        "failed", "auto-reply cap: 5/hour")


def test_a_portal_ticket_confirmation_is_sent_even_when_the_cap_is_full(
    served: Mailgate, sink: SmtpSink, clock: FixedClock
):
    mg, who = served, "claire@client.example"
    _fill_cap(mg, who)
    _wait_settled(mg, clock)
    with mg.app.db.write() as session:
        account = mg.app.accounts.find(session, who)
        assert account is not None
        ticket, _ = mg.app.conversations.open_ticket(
            session, _portal_incoming(account), category=None
        )
        ticket_id = ticket.id
    confirmations = sink.wait_for(
        lambda ms: any(str(m.msg["X-Mailgate-Ticket"]) == str(ticket_id)
                       and kind_of(m) == "confirmation" for m in ms))
    assert confirmations


def _portal_incoming(account: Account) -> Incoming:
    """What services/portal_tickets.py builds from the portal's form."""
    return Incoming(
        message_id=f"portal.{uuid.uuid4().hex}@mg.test", subject="Depuis le portail",
        text="Bonjour\n", html=None, from_addr=account.email, from_name=account.name,
        in_reply_to=(), references=(), cc=(), attachments=(), locale=account.locale,
        raw_sha256=None, channel="portal",
    )  # fmt: skip


def test_every_mail_not_sent_is_listed_counted_and_never_sent_and_does_not_fill_the_cap(
    served: Mailgate, sink: SmtpSink, clock: FixedClock
):
    mg, db, who = served, served.app.db, "robot@client.example"
    # 12 mails in one hour: 5 answered, 7 recorded as not sent. Had the 7 counted as sent,
    # the day's 10 would be reached and a "limit reached" notice queued within this hour.
    _fill_cap(mg, who, 12)
    _wait_settled(mg, clock)
    automatic = [o for o in outbox_to(db, who) if o.kind in AUTOMATIC_KINDS]
    unsent = [o for o in automatic if not_sent(o.status, o.attempts)]
    assert len(automatic) == 13 and len(unsent) == 8
    assert {o.reason for o in unsent} == {"auto-reply cap: 5/hour"}
    assert all(o.raw == b"" and o.kind == "confirmation" for o in unsent)
    assert "limit_reached" not in {o.kind for o in automatic}
    listed = [r for r in _outbox_list(mg) if r["to"] == who and r["status"] == "failed"]
    assert {r["reason"] for r in listed} == {"auto-reply cap: 5/hour"} and len(listed) == 8
    assert _metric(mg, "mailgate_outbox_not_sent_total", "auto_reply_cap") == 8
    mg.app.sender.run_once()  # nothing not-sent is ever claimed
    assert len([m for m in sink.messages if m.rcpt_tos == [who]]) == 5
    assert {o.attempts for o in outbox_to(db, who) if o.status == "failed"} == {0}

    clock.advance(minutes=61)  # the next hour answers 5 more: the cap counts what went out
    _fill_cap(mg, who, 6)
    _wait_settled(mg, clock)
    sent = [o.kind for o in outbox_to(db, who) if o.status == "sent"]
    # 10 went out in the day, then the day's notice: exactly the caps' meaning before issue 9.
    assert len(sent) == 11 and sent[-1] == "limit_reached" and sent.count("limit_reached") == 1
    assert len([m for m in sink.messages if m.rcpt_tos == [who]]) == 11


# -- 5. agent notifications: beyond the hourly cap, one digest per agent ----------------------


def test_a_flood_of_tickets_makes_five_notifications_and_one_digest_per_agent(
    served: Mailgate, sink: SmtpSink, clock: FixedClock
):
    mg, db = served, served.app.db
    with db.write() as session:
        for agent in AGENTS:
            mg.app.accounts.add_agent(session, agent, agent.split("@")[0].title())
    flood = 30
    for i in range(flood):
        send(mg.smtp_port, make_mail(sender="flood@client.example", subject=f"Alerte {i}"),
             mail_from="flood@client.example")
    _wait_settled(mg, clock)
    for agent in AGENTS:
        assert len(sink.of_kind("agent_notification", agent)) == 5
        held = [o for o in outbox_to(db, agent) if o.status == "queued"]
        assert len(held) == flood - 5
        assert all(o.raw == b"" and o.reason == "digest: held for the digest at 09:15 UTC"
                   for o in held)
    assert _metric(mg, "mailgate_outbox_delayed", "digest") == 2 * (flood - 5)
    listed = [r for r in _outbox_list(mg) if r["status"] == "queued"]
    assert len(listed) == 2 * (flood - 5) and all(r["reason"] for r in listed)

    assert mg.app.jobs.run_all(clock.now()).digests == 0  # not due yet
    clock.advance(minutes=15)
    assert mg.app.jobs.run_all(clock.now()).digests == 2
    _wait_settled(mg, clock)  # the two digests are due now: the sender takes them
    tickets = {t.id: t.subject for t in rows(db, Ticket)}
    for agent in AGENTS:
        (digest,) = sink.wait_kind("agent_digest", to=agent)
        text, html = digest.text(), _html(digest)
        assert digest.mail_from in ("", "<>") and digest.msg["Auto-Submitted"] == "auto-generated"
        notified = {int(str(m.msg["X-Mailgate-Ticket"]))
                    for m in sink.of_kind("agent_notification", agent)}
        listed_ids = {int(n) for n in re.findall(r"^#(\d+) ", text, re.M)}
        # Every ticket reaches the agent once: alone or in the digest, none lost.
        assert notified | listed_ids == set(tickets) and not notified & listed_ids
        for tid in listed_ids:
            assert tickets[tid] in text and f"/tickets/{tid}" in html
        assert {o.status for o in outbox_to(db, agent)} == {"sent"}
    assert _metric(mg, "mailgate_outbox_delayed", "digest") == 0

    # Still within the hour: the next ticket waits for a new digest, 15 minutes on.
    send(mg.smtp_port, make_mail(sender="flood@client.example", subject="Encore"),
         mail_from="flood@client.example")
    (late,) = [o for o in outbox_to(db, AGENTS[0]) if o.status == "queued"]
    assert late.reason == "digest: held for the digest at 09:30 UTC"
    clock.advance(minutes=15)
    assert mg.app.jobs.run_all(clock.now()).digests == 2
    assert len(sink.wait_kind("agent_digest", to=AGENTS[0], count=2)) == 2
    # In all: 5 mails and 2 digests per agent for 31 tickets.
    per_agent = [m for m in sink.messages if m.rcpt_tos == [AGENTS[0]]]
    assert sorted(kind_of(m) for m in per_agent) == ["agent_digest"] * 2 + [
        "agent_notification"] * 5
    assert count(db, Ticket) == flood + 1
